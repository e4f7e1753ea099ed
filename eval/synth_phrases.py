"""Phrase tables for eval.synth: the words of the synthetic users and their assistant.

Everything here is data.  A template is a string with `{v}` (one field's spoken value) or
named slots (`{volume}`, `{mode}`, ...) for a whole device.  A template may start with a
condition and a bar, `"v<=40|dim the lights to {v} percent"`, and is then only used when the
condition holds; conditions compare a name with a literal or with another name (`w>v`) and
join with `&`.  Request templates are imperatives in lower case ("set the TV volume to 30"),
so that any wrapper ("Could you {x}?", "Please {x}.") turns them into a sentence.
"""

from __future__ import annotations

# --- who the users are -----------------------------------------------------------------
# (sketch fragment, remarks in the user's own voice used as small talk)
OCCUPATIONS: list[tuple[str, list[str]]] = [
    ("night-shift nurse", [
        "Twelve hours on the ward and I didn't sit down once.",
        "Handover ran late again, someone always forgets the charts.",
        "My feet have officially filed a complaint.",
    ]),
    ("secondary-school maths teacher", [
        "Thirty teenagers and a broken projector, what a day.",
        "There's a pile of homework on the table waiting for me.",
        "If I hear 'when will we ever use this' once more, I'll scream.",
    ]),
    ("software developer working from home", [
        "The build has been red all day and nobody knows why.",
        "Three video calls back to back, my brain is mush.",
        "I swear the bug was in someone else's code.",
    ]),
    ("long-haul lorry driver", [
        "Nine hours on the motorway, my back is done.",
        "Roadworks the whole way back, of course.",
        "Nice to sleep in a bed that doesn't move for once.",
    ]),
    ("retired postman", [
        "Forty years of walking and now I get tired going to the shop.",
        "The neighbour's dog barked at me again, some things never change.",
        "Did the crossword in record time this morning.",
    ]),
    ("veterinary surgeon", [
        "Two spays and a very angry cat, that was my day.",
        "The Labrador ate a sock again. Third time this year.",
        "I smell like disinfectant and wet dog.",
    ]),
    ("barista saving up for art school", [
        "If one more person orders a half-caf oat latte with extra foam, I quit.",
        "Burnt my hand on the steam wand again.",
        "Tips were good today, at least.",
    ]),
    ("sound engineer", [
        "My ears are ringing after that gig.",
        "The drummer wanted more cowbell. Honestly.",
        "Spent four hours chasing a hum in the mixing desk.",
    ]),
    ("baker starting work long before dawn", [
        "Two hundred croissants before breakfast, not bad.",
        "The oven at work is on its last legs.",
        "Flour everywhere, even in my ears.",
    ]),
    ("PhD student writing up a thesis", [
        "Chapter three is fighting me.",
        "My supervisor wants 'just a few more experiments'. Sure.",
        "Another day, another forty tabs of papers open.",
    ]),
    ("firefighter on rotating shifts", [
        "Long shift. Mostly false alarms, thankfully.",
        "We spent an hour getting a cat off a roof. Classic.",
        "Drill day, my arms are jelly.",
    ]),
    ("florist with her own shop", [
        "Wedding order for three hundred roses, my hands are shredded.",
        "The delivery van broke down again.",
        "Everything smells of lilies, even me.",
    ]),
    ("architect on a tight deadline", [
        "The client changed the floor plan. Again.",
        "I've redrawn that staircase four times today.",
        "Site visit in the mud, my boots are ruined.",
    ]),
    ("airline pilot", [
        "Bit of turbulence over the Alps, nothing dramatic.",
        "My body has no idea what time zone it's in.",
        "Three sectors today, I'm done.",
    ]),
    ("landscape gardener", [
        "Dug out a tree stump all afternoon, my shoulders hate me.",
        "The hedge trimmer gave up on me before lunch.",
        "There's soil in places soil shouldn't be.",
    ]),
    ("physiotherapist", [
        "Told six people to do their exercises. None of them will.",
        "Back-to-back appointments, not even time for lunch.",
        "I could use a massage myself.",
    ]),
    ("freelance journalist chasing deadlines", [
        "Filed the piece with four minutes to spare.",
        "My editor cut my best paragraph, as usual.",
        "Spent the day waiting for a source to call back.",
    ]),
    ("new parent on parental leave", [
        "The baby finally went down, fingers crossed.",
        "I've had about three hours of sleep.",
        "We did a whole walk without a meltdown, mine or hers.",
    ]),
]

# (sketch fragment, value preferences, a remark the habit makes them say): a preference is
# a (low, high) range for a number or a value picked most of the time; keys are "device.field".
HABITS: list[tuple[str, dict[str, object], str]] = [
    ("is going deaf in one ear and keeps the TV loud", {"tv.volume": (55, 90)},
     "Yes, it's loud. My left ear has retired."),
    ("likes a cosy, warmly lit home", {"lights.color": "warm"},
     "I want this place to feel like a cosy cabin."),
    ("needs bright, cool light to stay focused", {"lights.color": "cool", "lights.brightness": (60, 100)},
     "I can't think in dim light, never could."),
    ("hates noise and keeps everything quiet", {"tv.volume": (5, 30), "speaker.volume": (5, 30)},
     "Everything's so loud out there, I just want some quiet."),
    ("plays music constantly, always with heavy bass", {"speaker.equalizer": "bass boost", "speaker.volume": (40, 80)},
     "A house without music is just a building."),
    ("binges series on Netflix", {"tv.input_source": "Netflix"},
     "Three episodes left of my series, no spoilers please."),
    ("watches video essays on YouTube all evening", {"tv.input_source": "YouTube"},
     "There's a two-hour video essay waiting for me."),
    ("is a console gamer with the console on HDMI1", {"tv.input_source": "HDMI1"},
     "My squad is waiting online, I'm late already."),
    ("is nervous about break-ins and always arms the alarm",
     {"security.armed": True, "security.alarm_volume": (70, 100)},
     "There was another break-in two streets over."),
    ("finds the alarm shrill and keeps it soft", {"security.alarm_volume": (10, 40)},
     "That siren nearly gave me a heart attack last week."),
    ("loves colour-changing lights", {"lights.mode": "dynamic"},
     "I love it when the lights shift around a bit."),
    ("keeps the screen dim to spare tired eyes", {"tv.brightness": (15, 45)},
     "My eyes are tired from staring at screens all day."),
    ("likes crisp, clear vocals on the speaker", {"speaker.equalizer": "treble boost"},
     "Lyrics should be crisp, not buried in the mix."),
    ("can't stand a draught and keeps the fan low", {"ac.fan_speed": (0, 1)},
     "I hate that cold draught from the vents."),
]

# How a user talks.  wrap: turn a request into a sentence; thanks: a closing line;
# corrections: how often they change their mind; chat: how often they make small talk.
TEMPERAMENTS: dict[str, dict[str, object]] = {
    "polite": {
        "sketch": "unfailingly polite",
        "wrap": ["Could you {x}, please?", "Would you {x}, please?", "Please {x}.", "When you get a sec, {x}.",
                 "I'd like you to {x}, if that's alright."],
        "more": ["And could you {x}, please?", "Also, please {x}.", "Then would you {x}?"],
        "thanks": ["Thanks ever so.", "Lovely, thank you.", "That's perfect, thank you kindly."],
        "corrections": 0.3, "chat": 0.5,
    },
    "terse": {
        "sketch": "curt, no-nonsense",
        "wrap": ["{X}.", "{X}. Now.", "Just {x}."],
        "more": ["And {x}.", "Also {x}.", "{X}."],
        "thanks": ["Good.", "Fine.", "That'll do."],
        "corrections": 0.25, "chat": 0.2,
    },
    "cheerful": {
        "sketch": "chatty, cheerful",
        "wrap": ["Ooh, can you {x}?", "Let's {x}!", "Could you {x}? Ta!", "Right, {x}!", "Okay, {x}, please!"],
        "more": ["Oh, and {x}!", "And let's {x}!", "Ooh, also {x}!"],
        "thanks": ["You're a star!", "Perfect, cheers!", "Brilliant, thanks!"],
        "corrections": 0.35, "chat": 0.8,
    },
    "grumpy": {
        "sketch": "grumpy, gadget-averse",
        "wrap": ["Just {x}.", "{X}, and don't make me ask twice.", "{X}. Is that so hard?", "Right. {X}."],
        "more": ["And {x} whilst you're there.", "Also {x}.", "And {x}, obviously."],
        "thanks": ["About time.", "Finally.", "Fine, that'll do."],
        "corrections": 0.3, "chat": 0.4,
    },
    "easy-going": {
        "sketch": "easy-going",
        "wrap": ["Can you {x}?", "Let's {x}.", "Mind if we {x}?", "Maybe {x}?", "How about we {x}?"],
        "more": ["And {x}, I reckon.", "Oh, and {x}.", "Let's also {x}."],
        "thanks": ["Cheers.", "Nice one.", "Sweet, thanks."],
        "corrections": 0.35, "chat": 0.6,
    },
    "scatterbrained": {
        "sketch": "scatterbrained",
        "wrap": ["Um, can you {x}?", "Could you {x}? I think.", "Okay so, {x}.", "Right, um, {x}."],
        "more": ["Oh, and {x}. Wait, yes.", "And... {x}.", "Oh! Also {x}."],
        "thanks": ["Thanks, I think that's everything.", "Great, thanks! I think.", "Perfect, cheers."],
        "corrections": 0.75, "chat": 0.6,
    },
}

# {a} is "A" or "An", whichever fits the next word.
CHARACTER_FRAMES = [
    "{a} {temperament} {occupation} who {habit}.",
    "{a} {occupation}, {temperament}, who {habit}.",
    "{a} {occupation} who {habit}. {Temperament}, and it shows.",
]

# --- how values are spoken --------------------------------------------------------------
# User-side words for categorical values (the first is the plain one).  Tests map text back
# with these (as whole words, case-insensitive), so every request template that says a
# category says one of these words.
VALUE_WORDS: dict[tuple[str, str], dict[object, list[str]]] = {
    ("tv", "input_source"): {"HDMI1": ["HDMI1", "HDMI 1"], "HDMI2": ["HDMI2", "HDMI 2"], "AV": ["AV"],
                             "Netflix": ["Netflix"], "YouTube": ["YouTube"]},
    ("ac", "mode"): {"cool": ["cool"], "heat": ["heat"], "auto": ["auto"]},
    ("lights", "color"): {"warm": ["warm", "warm white"], "cool": ["cool", "cool white"],
                          "neutral": ["neutral", "neutral white"]},
    ("lights", "mode"): {"static": ["static"], "dynamic": ["dynamic"]},
    ("speaker", "equalizer"): {"bass boost": ["bass boost"], "balanced": ["balanced"],
                               "treble boost": ["treble boost"]},
    # Regular expressions, matched as whole words ("arm" is not in "alarm" or "disarm").
    ("security", "armed"): {True: ["arm(ed)?", "alarm on", "security on"], False: ["disarm(ed)?", "alarm off",
                                                                               "security off"]},
}

# The assistant's words for categorical values.
ASSISTANT_WORDS: dict[tuple[str, str], dict[object, str]] = {
    ("lights", "color"): {"warm": "warm white", "cool": "cool white", "neutral": "neutral white"},
}

# Short names for a field, used in corrections ("Actually, make the {f} 35").
FIELD_NAMES: dict[tuple[str, str], list[str]] = {
    ("tv", "volume"): ["TV volume", "telly volume"],
    ("tv", "brightness"): ["TV brightness", "screen brightness"],
    ("tv", "input_source"): ["TV input", "TV source"],
    ("ac", "temperature"): ["temperature", "thermostat"],
    ("ac", "mode"): ["AC mode", "air conditioning mode"],
    ("ac", "fan_speed"): ["fan speed", "AC fan"],
    ("lights", "brightness"): ["lights", "light brightness"],
    ("lights", "color"): ["light colour", "colour of the lights"],
    ("lights", "mode"): ["lighting mode", "light mode"],
    ("speaker", "volume"): ["speaker volume", "music volume"],
    ("speaker", "equalizer"): ["EQ", "speaker equalizer"],
    ("security", "alarm_volume"): ["alarm volume", "siren volume"],
}

# --- requests ---------------------------------------------------------------------------
# The first thing said about a device: an imperative that names the device.
FIELD_REQUESTS: dict[tuple[str, str], list[str]] = {
    ("tv", "volume"): ["set the TV volume to {v}", "put the TV sound on {v}", "make the TV volume {v}",
                       "bring the telly's volume to {v}", "v>=60|turn the TV up to {v}",
                       "v<=25|turn the TV down to {v}"],
    ("tv", "brightness"): ["set the TV brightness to {v}", "put the screen brightness at {v}",
                           "make the TV brightness {v}", "change the TV brightness to {v}",
                           "v<=40|dim the TV to {v}"],
    ("tv", "input_source"): ["put the TV on {v}", "flick the TV across to {v}", "change the TV input to {v}",
                             "flip the telly to {v}", "get {v} up on the TV"],
    ("ac", "temperature"): ["set the thermostat to {v} degrees", "put the AC at {v} degrees",
                            "make it {v} degrees in here", "get the temperature to {v}", "set the AC to {v}"],
    ("ac", "mode"): ["put the AC on {v} mode", "switch the AC to {v}", "have the air conditioning in {v} mode",
                     "run the AC in {v} mode"],
    ("ac", "fan_speed"): ["set the AC fan to {v}", "put the fan speed on {v}", "make the fan speed {v}",
                          "turn the AC fan to {v}"],
    ("lights", "brightness"): ["set the lights to {v} percent", "put the lights at {v}", "make the lights {v} percent",
                               "v<=40|dim the lights to {v}", "v>=60|raise the lights to {v} percent",
                               "v<=40|take the lights down to {v} percent"],
    ("lights", "color"): ["make the lights {v}", "switch the lights to {v}", "set the light colour to {v}",
                          "give me {v} light"],
    ("lights", "mode"): ["put the lights on {v} mode", "set the lights to {v}", "switch the lighting to {v} mode",
                         "make the lights {v}"],
    ("speaker", "volume"): ["set the speaker to {v}", "put the music on at {v}", "make the speaker volume {v}",
                            "play something on the speaker at volume {v}"],
    ("speaker", "equalizer"): ["put the speaker on {v}", "set the equalizer to {v}", "switch the speaker EQ to {v}",
                               "give the music some {v}"],
    ("security", "armed"): ["v=true|arm the security system", "v=true|arm the alarm", "v=true|get the house armed",
                            "v=true|switch the alarm on", "v=false|disarm the security system",
                            "v=false|disarm the alarm", "v=false|switch the alarm off",
                            "v=false|turn the security off"],
    ("security", "alarm_volume"): ["set the alarm volume to {v}", "alarm volume on {v}",
                                   "make the siren volume {v}", "change the alarm volume to {v}"],
}

# What follows the first field of the same device ("..., brightness 70 and Netflix").
FIELD_TAILS: dict[tuple[str, str], list[str]] = {
    ("tv", "volume"): ["volume {v}", "the volume at {v}", "sound on {v}"],
    ("tv", "brightness"): ["brightness {v}", "the brightness at {v}", "brightness to {v}"],
    ("tv", "input_source"): ["switch it to {v}", "input {v}", "put it on {v}"],
    ("ac", "temperature"): ["{v} degrees", "temperature {v}", "the temperature at {v}"],
    ("ac", "mode"): ["{v} mode", "mode {v}", "the mode on {v}"],
    ("ac", "fan_speed"): ["fan speed {v}", "the fan on {v}", "fan at {v}"],
    ("lights", "brightness"): ["{v} percent", "brightness {v}", "the brightness at {v}"],
    ("lights", "color"): ["{v}", "the colour to {v}", "colour {v}"],
    ("lights", "mode"): ["{v}", "{v} mode", "mode {v}"],
    ("speaker", "volume"): ["volume {v}", "the volume at {v}", "the volume on {v}"],
    ("speaker", "equalizer"): ["{v}", "{v} on the EQ", "with {v}"],
    ("security", "armed"): ["v=true|arm it", "v=false|disarm it"],
    ("security", "alarm_volume"): ["alarm volume {v}", "the alarm at {v}", "siren at {v}"],
}

# A whole device in one phrase, keyed by the exact set of fields said (schema order).
DEVICE_REQUESTS: dict[tuple[str, tuple[str, ...]], list[str]] = {
    ("tv", ("volume", "brightness", "input_source")): [
        "switch the TV to {input_source} with the volume at {volume} and brightness {brightness}",
        "get {input_source} going on the TV, volume {volume}, brightness {brightness}",
        "put the TV on {input_source}, brightness {brightness}, sound at {volume}",
    ],
    ("tv", ("volume", "input_source")): [
        "put {input_source} on the TV, volume {volume}",
        "switch the telly to {input_source} and have the volume on {volume}",
    ],
    ("tv", ("brightness", "input_source")): [
        "put the TV on {input_source} with the brightness at {brightness}",
    ],
    ("ac", ("temperature", "mode", "fan_speed")): [
        "mode=heat|heat the place to {temperature} with the fan on {fan_speed}",
        "mode=cool|cool it down to {temperature}, fan on {fan_speed}",
        "set the AC to {mode} at {temperature} degrees, fan speed {fan_speed}",
        "run the AC on {mode}, {temperature} degrees, fan turning at {fan_speed}",
    ],
    ("ac", ("temperature", "mode")): [
        "mode=heat|crank the heat up to {temperature}",
        "mode=heat|heat to {temperature}",
        "mode=cool|cool the place down to {temperature}",
        "mode=auto|let the AC run on auto, {temperature} degrees",
        "put the AC on {mode} at {temperature} degrees",
    ],
    ("ac", ("mode", "fan_speed")): [
        "put the AC on {mode} with the fan at {fan_speed}",
    ],
    ("lights", ("brightness", "color", "mode")): [
        "set the lights to {brightness} percent, {color}, {mode}",
        "brightness<=40|dim the lights to {brightness}, {color} and {mode}",
        "make the lights {color} and {mode} at {brightness} percent",
    ],
    ("lights", ("brightness", "color")): [
        "put the lights at {brightness} percent in {color}",
        "set the lights to {color} at {brightness}",
    ],
    ("lights", ("color", "mode")): [
        "make the lights {color} and {mode}",
    ],
    ("speaker", ("volume", "equalizer")): [
        "put some music on at volume {volume} with {equalizer}",
        "set the speaker to {volume} on {equalizer}",
        "play something on the speaker, volume {volume}, {equalizer} on the EQ",
    ],
    ("security", ("armed", "alarm_volume")): [
        "armed=true|arm the alarm, its volume at {alarm_volume}",
        "armed=true|arm the security system and the siren at {alarm_volume}",
        "armed=true|batten down the hatches, arm everything, siren {alarm_volume}",
        "armed=false|disarm the security system, but the alarm volume goes to {alarm_volume}",
        "armed=false|switch the alarm off but keep its volume at {alarm_volume}",
    ],
}

# Said before a request, as the reason for it ("It's freezing in here, heat to 24").
# Conditions name "device.field" of the values being asked for.
INDIRECT: list[tuple[str, list[str]]] = [
    ("ac.mode=heat", ["It's arctic in this house", "I can't feel my toes", "Brr, this place is an icebox",
                      "It's chilly inside"]),
    ("ac.mode=cool", ["I'm melting", "It's stuffy in here", "It's like an oven in this room"]),
    ("lights.brightness>=70", ["It's like a cave in here", "I can't see a thing"]),
    ("lights.brightness<=30", ["These lights are glaring at me", "My eyes need a break"]),
    ("tv.volume>=60", ["The TV is a whisper", "The dialogue is all mumbles"]),
    ("tv.volume<=20", ["The telly is deafening me", "That's far too loud"]),
    ("tv.brightness>=80", ["The picture looks washed out", "The screen looks murky"]),
    ("speaker.equalizer=bass boost", ["This track needs more thump"]),
    ("speaker.equalizer=treble boost", ["The vocals sound muddy"]),
    ("security.armed=true", ["Better safe than sorry", "I don't want any surprises"]),
    ("security.armed=false", ["I'm expecting a delivery", "People are coming round"]),
    ("security.alarm_volume<=30", ["That siren nearly gave me a heart attack last time"]),
]
INDIRECT_JOINS = ["{pre}, so {x}.", "{pre}. {X}.", "{pre}... {x}, would you?", "{pre}. Can you {x}?"]

# When the assistant asks for a missing value: a vague request naming only the device, and
# the question.
CLARIFY: dict[tuple[str, str], tuple[list[str], list[str]]] = {
    ("tv", "volume"): (["get the TV going", "put the telly on"],
                       ["Which volume level?", "At what volume?", "How loud should it be?"]),
    ("tv", "brightness"): (["fix the TV brightness", "change how bright the TV is"],
                           ["What brightness?", "How bright should the screen go?"]),
    ("tv", "input_source"): (["switch the TV input", "change what's on the TV"],
                             ["Which input: HDMI1, HDMI2, AV, Netflix or YouTube?",
                              "Which source should I switch to?"]),
    ("ac", "temperature"): (["sort out the temperature", "change the thermostat"],
                            ["Which temperature, in degrees?", "What should the thermostat read?"]),
    ("ac", "mode"): (["change the AC mode", "adjust the air conditioning"],
                     ["Cooling, heating or auto?", "Which AC mode?"]),
    ("ac", "fan_speed"): (["change the AC fan", "adjust the fan"],
                          ["What fan speed, from 0 to 3?", "Which fan speed?"]),
    ("lights", "brightness"): (["sort the lights out", "adjust the lights"],
                               ["What level for the lights?", "What brightness level?"]),
    ("lights", "color"): (["change the light colour", "switch the colour of the lights"],
                          ["Warm, cool or neutral?", "Which colour would you like?"]),
    ("lights", "mode"): (["change the lighting mode", "switch the light mode"],
                         ["Static or dynamic?", "Which lighting mode?"]),
    ("speaker", "volume"): (["stick some tunes on", "fire up the speaker"],
                            ["What volume?", "How loud?"]),
    ("speaker", "equalizer"): (["change the speaker's EQ", "fiddle with the equalizer"],
                               ["Bass boost, balanced or treble boost?", "Which equalizer setting?"]),
    ("security", "alarm_volume"): (["adjust the siren's loudness", "sort out the alarm volume"],
                                   ["Which alarm volume?", "How loud should the siren go?"]),
}
CLARIFY_ANSWERS = ["{v}, please.", "{v}.", "Let's say {v}.", "Go with {v}.", "{v} should do it.", "Hmm... {v}.",
                   "Make it {v}."]

# A change of mind in a later turn; w is the value said first, v the final one.
LATER_CORRECTIONS = {
    "number": ["Actually, make the {f} {v}.", "w>v|Hmm, {w} is a bit much. Take the {f} down to {v}.",
               "w<v|{w} isn't enough, bump the {f} up to {v}.", "On second thought, {f} to {v}, please.",
               "Sorry, I meant {v} for the {f}, not {w}.", "Change of plan: {f} at {v}."],
    "category": ["Actually, make the {f} {v} instead.", "On second thought, switch the {f} to {v}.",
                 "Sorry, I meant {v}, not {w}, for the {f}.", "Hmm, no. {v} for the {f}."],
}
# A change of mind within one phrase: replaces the value.
INLINE_CORRECTIONS = {
    "number": ["{w}... no, {v}", "{w}, actually {v}", "{w}, no wait, make it {v}", "w<v|{w}, hmm, a notch higher, {v}",
               "w>v|{w}... no, a bit less, {v}"],
    "category": ["{w}... no, {v}", "{w}, sorry, I mean {v}", "{w}, actually no, {v}"],
}

# --- the assistant ----------------------------------------------------------------------
# A confirmation is a subject and fragments: "The TV is now on Netflix with volume 30 and brightness 70."
DEVICE_SUBJECTS = {
    "tv": ["The TV's now", "The TV is", "TV:"],
    "ac": ["The AC is now", "The AC is", "AC:"],
    "lights": ["Lights are now", "The lights are", "Lights:"],
    "speaker": ["The speaker is now", "The speaker is", "Speaker:"],
    "security": ["The security system is now", "Security is", "Security:"],
}
CONFIRM_FRAGMENTS: dict[tuple[str, str], list[str]] = {
    ("tv", "volume"): ["on volume {v}"],
    ("tv", "brightness"): ["at brightness {v}", "set to brightness {v}"],
    ("tv", "input_source"): ["on {v}", "switched to {v}"],
    ("ac", "temperature"): ["at {v} degrees", "set to {v} degrees"],
    ("ac", "mode"): ["in {v} mode", "on {v}"],
    ("ac", "fan_speed"): ["on fan speed {v}", "running the fan at {v}"],
    ("lights", "brightness"): ["at {v} percent", "at brightness {v}"],
    ("lights", "color"): ["{v}", "set to {v}"],
    ("lights", "mode"): ["in {v} mode", "{v}"],
    ("speaker", "volume"): ["at volume {v}", "playing at {v}"],
    ("speaker", "equalizer"): ["on {v}", "using the {v} equalizer"],
    ("security", "armed"): ["v=true|armed", "v=false|disarmed"],
    ("security", "alarm_volume"): ["at alarm volume {v}", "set to alarm volume {v}"],
}
DEVICE_CONFIRMS: dict[tuple[str, tuple[str, ...]], list[str]] = {
    ("ac", ("temperature", "mode", "fan_speed")): [
        "mode=heat|Heating to {temperature} degrees, fan speed {fan_speed}.",
        "mode=cool|Cooling to {temperature} degrees, fan on {fan_speed}.",
        "mode=auto|Auto mode, {temperature} degrees, fan speed {fan_speed}.",
    ],
    ("ac", ("temperature", "mode")): [
        "mode=heat|Heating to {temperature} degrees.",
        "mode=cool|Cooling the place to {temperature} degrees.",
    ],
    ("security", ("armed", "alarm_volume")): [
        "armed=true|Alarm armed; its volume is {alarm_volume}.",
        "armed=false|Disarmed, with the siren level on {alarm_volume}.",
    ],
    ("speaker", ("volume", "equalizer")): ["Music playing at volume {volume}, {equalizer} on the EQ.",
                                           "The speaker is playing at {volume} with {equalizer} sound."],
}
ACKS = ["Done. ", "Okay. ", "Sure. ", "Got it. ", "", "All set. ", "No problem. ", "Right away. "]

# --- small talk -------------------------------------------------------------------------
# (condition on the session context, lines); contexts are "field=value" joined with "&".
USER_CONTEXT_REMARKS: list[tuple[str, list[str]]] = [
    ("weather=rainy", ["It's pouring out there.", "Got caught in the rain on the way back.", "Rain again, of course."]),
    ("weather=snowy", ["The snow hasn't let up at all.", "There's snow piling up on the doorstep.",
                       "Snow again. Pretty to look at, awful to walk in."]),
    ("weather=sunny", ["Gorgeous sunshine out there.", "Proper blue sky today."]),
    ("weather=cloudy", ["Grey and gloomy out.", "The sky's completely overcast."]),
    ("outdoor_temp=very cold", ["Bitter out there, properly bitter.", "The puddles outside are solid ice."]),
    ("outdoor_temp=cold", ["Chilly out there.", "It's nippy outside."]),
    ("outdoor_temp=hot", ["It's boiling outside.", "The heat out there is brutal."]),
    ("outdoor_temp=warm", ["Warm one out there.", "Properly warm out today."]),
    ("outdoor_temp=mild", ["Mild out, at least.", "Not too bad out there, temperature-wise."]),
    ("sun_phase=before_sunrise", ["Still black as ink outside.", "The sun's not even up yet."]),
    ("sun_phase=after_sunset", ["It's already dark out.", "Dark already, I lost track of time."]),
    ("time_of_day=evening&sun_phase=daylight", ["Still light out, nice."]),
    ("day_of_week=weekend", ["Finally, the weekend.", "No plans this weekend, thankfully."]),
    ("day_of_week=weekday&time_of_day=morning", ["Workday again.", "Another weekday, here we go."]),
    ("time_of_day=night", ["Late one tonight.", "Can't believe how late it is."]),
]
GREETINGS = {
    "morning": ["Morning!", "Good morning.", "Hey, morning."],
    "afternoon": ["Afternoon.", "Hi there.", "Hey."],
    "evening": ["Evening!", "Good evening.", "Hey, I'm home."],
    "night": ["Hey, it's me.", "Hi.", "Still up?"],
}
ASSISTANT_GREETINGS = {
    "morning": ["Good morning! What shall I set up?", "Morning! How can I help?"],
    "afternoon": ["Good afternoon. How can I help?", "Hi! Anything you'd like changed?"],
    "evening": ["Good evening. What can I set up for you?", "Hello again. What would you like?"],
    "night": ["Hi, I'm listening. How can I help?", "Hi. Burning the midnight oil?"],
}
WEATHER_QUESTIONS = ["What's it like outside?", "How's the weather looking?", "What's it doing out there?",
                     "Is it nice out?"]
# Descriptions of the context; {period} is the time of day, {day} a day name.
TEMP_WORDS = {"very cold": "bitterly cold", "cold": "cold", "mild": "mild", "warm": "warm", "hot": "hot"}
WEATHER_WORDS = {"sunny": "sunny", "cloudy": "cloudy", "rainy": "rainy", "snowy": "snowy"}
DAY_WORDS = {"weekday": ["weekday", "Tuesday", "Wednesday", "Thursday"], "weekend": ["weekend", "Saturday", "Sunday"]}
WEATHER_ANSWERS = ["It's a {temp}, {weather} {day} {period}.", "{Weather} and {temp} right now.",
                   "It's {temp} out, and {weather}."]
SUN_REMARKS = {"before_sunrise": "Dawn hasn't broken yet.", "after_sunset": "It's dark out already.", "daylight": ""}
ASSISTANT_CONTEXT_REMARKS = ["It's a {temp}, {weather} {period} out there, by the way.",
                             "Heads up: it's {weather} and {temp} outside.", "Quite a {weather} {period}, isn't it?"]
CHAT_REPLIES = ["Ha, I hear you.", "Fair enough.", "I can imagine.", "Well, you're home now.",
                "Sounds like quite a day.", "Noted. I'll keep things easy for you."]
ASSISTANT_CLOSERS = ["Anytime.", "Enjoy your {period}.", "You're welcome. Have a lovely {period}.",
                     "Happy to help.", "time_of_day=night|Sleep well.", "time_of_day=morning|Good luck today."]

# --- natural speech (style "natural") -----------------------------------------------------
# Everything below is used only by `style="natural"`; the plain style never reads it, so its
# output stays what it was.  Values said first and corrected, vague requests, nicknames and the
# rest keep the labels honest: the last explicit value the user gives is the labelled one.

# Other names people use for a device: (the plain name in a request, as a regular expression;
# the nicknames that may replace it).  Each nickname still names the device unambiguously.
NICKNAMES: dict[str, tuple[str, list[str]]] = {
    "tv": (r"\bthe (?:TV|telly)\b", ["the telly", "the box", "the television", "the goggle box"]),
    "lights": (r"\bthe lights\b", ["the big light", "the lamps", "the overheads", "the ceiling lights"]),
    "ac": (r"\bthe (?:AC|air conditioning)\b", ["the aircon", "the air con", "the climate control"]),
    "speaker": (r"\bthe speaker\b", ["the stereo", "the sound system", "the hi-fi"]),
    "security": (r"\bthe (?:alarm|security system)\b(?! volume| on\b| off\b)", ["the burglar alarm", "the house alarm",
                                                                    "the alarm system"]),
}
# A vague request for one numeric field; the exact value comes later in the session.
# v is the value it settles on, so the direction fits it.
VAGUE_REQUESTS: dict[tuple[str, str], list[str]] = {
    ("tv", "volume"): ["v>=40|turn the TV up a bit", "v>=40|make the telly louder",
                       "v>=40|give the TV a bit more sound", "v<40|bring the TV down a touch",
                       "v<40|make the telly a bit quieter"],
    ("tv", "brightness"): ["v>=50|make the TV screen brighter", "v>=50|perk the screen up a bit",
                           "v<50|take the TV screen down a notch", "v<50|the screen is glaring, tone the TV down"],
    ("ac", "temperature"): ["v>=22|make it warmer in here", "v>=22|take the chill off the room",
                            "v>=22|nudge the thermostat up", "v<=21|make it a bit fresher in here",
                            "v<=21|nudge the thermostat down", "v<=21|it's stuffy, bring the temperature down"],
    ("ac", "fan_speed"): ["v>=2|turn the fan up a bit", "v>=2|get more air out of the fan",
                          "v<=1|ease the fan off", "v<=1|the fan is too much, turn it down"],
    ("lights", "brightness"): ["v>=50|give me more light", "v>=50|brighten the lights a little",
                               "v>=50|turn the lights up", "v<50|dim the lights a touch",
                               "v<50|knock the lights down a bit", "v<50|it's too glary, soften the lights"],
    ("speaker", "volume"): ["v>=40|turn the music up", "v>=40|crank the speaker a little",
                            "v<40|turn the music down a bit", "v<40|make the speaker quieter"],
    ("security", "alarm_volume"): ["v>=50|make the alarm louder", "v>=50|give the siren more punch",
                                   "v<50|make the alarm quieter", "v<50|tone the siren down"],
}
# The assistant's answer to a vague request ({f}: a field name), said at the end of its reply.
VAGUE_ACKS = ["I'll nudge the {f}; tell me when it's right.", "Adjusting the {f} now. Say when.",
              "Changing the {f} a little. Give me a number if you have one in mind.",
              "On it with the {f}. Let me know where it should land."]
# The user settling the value: right after the assistant's answer, or later naming the field.
VAGUE_SETTLES_NOW = ["{V} is good.", "There. {V} is right.", "Stop at {v}, please.", "A bit more... {v}. Perfect.",
                     "{V} will do it.", "Let's land on {v}.", "Hmm, go to {v}."]
VAGUE_SETTLES_LATER = ["Oh, the {f}: {v} is good.", "For the {f}, {v} is about right.", "Let's settle the {f} at {v}.",
                       "Thinking about it, {v} for the {f}.", "Back to the {f}, put it on {v} and leave it."]

# Numbers that are not settings.  Leads start a request turn, before any device is named
# ({h}: an hour, {k}: a count, {m}: minutes); tails may follow device talk, so their number
# comes with a word that marks it as a time or a count.
DISTRACTOR_LEADS = ["I got in at {h}", "Only made it back at {h}", "Been up since {h}",
                    "My {k} nephews are staying over", "Just did {k} loads of washing",
                    "The bus was {m} minutes late", "I've had {k} coffees today",
                    "Flat {k} upstairs is having a party", "We only got back at {h}", "My {k} kids are finally asleep"]
DISTRACTOR_TAILS = ["I've got {k} parcels to open.", "Still {k} emails to answer.", "I'm off out again at {h} pm.",
                    "Dinner's at {h}:30.", "The match starts at {h} o'clock.", "The twins turned {k} years old today!"]

# A device left alone, said after a request (never a device the session sets).
NEGATED_DEVICES: dict[str, list[str]] = {
    "tv": ["leave the TV alone", "don't touch the telly", "the TV can stay as it is", "not the TV",
           "I'm cool with the TV as it is"],
    "ac": ["don't touch the thermostat", "leave the AC alone", "no need to touch the aircon"],
    "lights": ["leave the lights as they are", "don't touch the lights", "the lights are fine as they are"],
    "speaker": ["no music for now", "leave the speaker alone", "don't touch the speaker",
                "I'm cool with the speaker as it is"],
    "security": ["leave the security system alone", "don't mess with the security system"],
}
# A field left alone on a device the turn does set (never a field the session sets).
NEGATED_FIELDS: dict[tuple[str, str], list[str]] = {
    ("tv", "volume"): ["don't touch the TV volume"],
    ("tv", "brightness"): ["leave the TV brightness alone"],
    ("tv", "input_source"): ["don't switch the TV input", "keep the TV on whatever it's showing"],
    ("ac", "temperature"): ["leave the thermostat temperature as it is"],
    ("ac", "mode"): ["don't change the AC mode"],
    ("ac", "fan_speed"): ["don't change the fan", "leave the fan where it is"],
    ("lights", "brightness"): ["don't touch the light brightness"],
    ("lights", "color"): ["don't change the light colour"],
    ("lights", "mode"): ["keep the lighting mode as it is"],
    ("speaker", "volume"): ["don't touch the speaker volume"],
    ("speaker", "equalizer"): ["leave the speaker EQ alone"],
    ("security", "alarm_volume"): ["don't touch the siren volume"],
}
# The lights of other rooms, said when the lights are set ("these" are the ones set).
NEGATED_ROOMS = ["just in here, not the kitchen lights", "not the hallway lights, only these",
                 "only the lounge, not the bedroom lights"]
NEGATION_JOINS = ["But {n}.", "{N}, though.", "Oh, and {n}.", "{N}, mind.", "{N}, please."]

# Corrections said the way people blurt them, added to the plain ones.
NATURAL_INLINE_CORRECTIONS = {
    "number": ["{w}. Hang on, no, {v}", "{w}, scrap that, {v}", "{w}... or rather {v}", "{v}, not {w}",
               "w>v|{w}, hmm, lower, {v}", "w<v|{w}... no, higher, {v}"],
    "category": ["{w}. Hang on, no, {v}", "{w}, scrap that, {v}", "{v}, not {w}"],
}
NATURAL_LATER_CORRECTIONS = {
    "number": ["Wait, did I say {w}? The {f} should be {v}.", "Ugh, {w} is wrong. {V} for the {f}.",
               "Let me redo the {f}: {v}.", "Scratch the {f} I gave you, make it {v}."],
    "category": ["Wait, not {w}. {V} for the {f}.", "Hmm, {w} was a mistake; the {f} should be {v}."],
}

# Setting words in other senses, in small talk and closing lines (no device, no number).
OTHER_SENSE_CHAT = ["My sister had a bright idea: a barbecue. In this weather.",
                    "Cycling is my mode of transport now, apparently.",
                    "Told my boss I'm cool with the new rota. I'm not.",
                    "I'm a big fan of doing absolutely nothing tonight.",
                    "The new neighbours seem warm enough, they brought biscuits round.",
                    "The whole team kept its cool today, for once."]
OTHER_SENSE_THANKS = ["Cool, that's the lot.", "I'm cool with all that. Thanks.", "Bright. Cheers.",
                      "Sorted. Big fan of you, you know."]
