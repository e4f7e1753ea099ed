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
        "I've still got a stack of homework to mark.",
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
        "The hedge trimmer died halfway through the job.",
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
    ("is a little hard of hearing and keeps the TV loud", {"tv.volume": (55, 90)},
     "Don't tell me it's too loud, I can't hear a thing otherwise."),
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
     "I want to hear every word of the lyrics."),
    ("can't stand a draught and keeps the fan low", {"ac.fan_speed": (0, 1)},
     "I hate that cold draught from the vents."),
]

# How a user talks.  wrap: turn a request into a sentence; thanks: a closing line;
# corrections: how often they change their mind; chat: how often they make small talk.
TEMPERAMENTS: dict[str, dict[str, object]] = {
    "polite": {
        "sketch": "unfailingly polite",
        "wrap": ["Could you {x}, please?", "Would you {x}, please?", "Please {x}.", "If it's no trouble, {x}.",
                 "I'd like you to {x}, if you don't mind."],
        "more": ["And could you {x}, please?", "Also, please {x}.", "Then would you {x}?"],
        "thanks": ["Thank you so much.", "Lovely, thank you.", "That's perfect, thank you kindly."],
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
        "more": ["And {x} while you're at it.", "Also {x}.", "And {x}, obviously."],
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

# Short names for a field, used in corrections ("Actually, make the {f} 47").
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
    ("tv", "input_source"): ["put the TV on {v}", "switch the TV over to {v}", "change the TV input to {v}",
                             "flip the telly to {v}", "get {v} up on the TV"],
    ("ac", "temperature"): ["set the thermostat to {v} degrees", "put the AC at {v} degrees",
                            "make it {v} degrees in here", "get the temperature to {v}", "set the AC to {v}"],
    ("ac", "mode"): ["put the AC on {v} mode", "switch the AC to {v}", "set the air conditioning to {v} mode",
                     "run the AC in {v} mode"],
    ("ac", "fan_speed"): ["set the AC fan to {v}", "put the fan speed on {v}", "make the fan speed {v}",
                          "turn the AC fan to {v}"],
    ("lights", "brightness"): ["set the lights to {v} percent", "put the lights at {v}", "make the lights {v} percent",
                               "v<=40|dim the lights to {v}", "v>=60|bring the lights up to {v} percent",
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
    ("security", "alarm_volume"): ["set the alarm volume to {v}", "put the alarm volume at {v}",
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
        "put {input_source} on the TV at volume {volume}",
        "switch the telly to {input_source} and set the volume to {volume}",
    ],
    ("tv", ("brightness", "input_source")): [
        "put the TV on {input_source} with the brightness at {brightness}",
    ],
    ("ac", ("temperature", "mode", "fan_speed")): [
        "mode=heat|heat the place to {temperature} with the fan on {fan_speed}",
        "mode=cool|cool it down to {temperature}, fan on {fan_speed}",
        "set the AC to {mode} at {temperature} degrees, fan speed {fan_speed}",
        "run the AC on {mode}, {temperature} degrees, with the fan at {fan_speed}",
    ],
    ("ac", ("temperature", "mode")): [
        "mode=heat|crank the heat up to {temperature}",
        "mode=heat|heat to {temperature}",
        "mode=cool|cool the place down to {temperature}",
        "mode=auto|leave the AC on auto at {temperature}",
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
        "armed=true|arm the alarm with the volume at {alarm_volume}",
        "armed=true|arm the security system, alarm volume {alarm_volume}",
        "armed=true|lock things down and arm the alarm at {alarm_volume}",
        "armed=false|disarm the security system and set the alarm volume to {alarm_volume}",
        "armed=false|switch the alarm off but keep its volume at {alarm_volume}",
    ],
}

# Said before a request, as the reason for it ("It's freezing in here, heat to 24").
# Conditions name "device.field" of the values being asked for.
INDIRECT: list[tuple[str, list[str]]] = [
    ("ac.mode=heat", ["It's freezing in here", "I can't feel my toes", "Brr, this place is an icebox",
                      "It's chilly inside"]),
    ("ac.mode=cool", ["I'm melting", "It's stuffy in here", "It's like an oven in this room"]),
    ("lights.brightness>=70", ["It's like a cave in here", "I can't see a thing"]),
    ("lights.brightness<=30", ["The lights are way too harsh", "My eyes need a break"]),
    ("tv.volume>=60", ["I can barely hear the TV", "The dialogue is all mumbles"]),
    ("tv.volume<=20", ["The TV is blaring", "That's far too loud"]),
    ("tv.brightness>=80", ["The picture looks washed out", "I can hardly see the screen"]),
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
    ("tv", "volume"): (["turn the TV on", "put the telly on"],
                       ["What volume would you like?", "At what volume?", "How loud should it be?"]),
    ("tv", "brightness"): (["fix the TV brightness", "change the brightness on the TV"],
                           ["What brightness?", "How bright do you want the screen?"]),
    ("tv", "input_source"): (["switch the TV input", "change what's on the TV"],
                             ["Which input: HDMI1, HDMI2, AV, Netflix or YouTube?",
                              "Which source should I switch to?"]),
    ("ac", "temperature"): (["sort out the temperature", "change the thermostat"],
                            ["What temperature should I set?", "Which temperature would you like?"]),
    ("ac", "mode"): (["change the AC mode", "adjust the air conditioning"],
                     ["Cool, heat or auto?", "Which mode would you like?"]),
    ("ac", "fan_speed"): (["change the AC fan", "adjust the fan"],
                          ["What fan speed, from 0 to 3?", "Which fan speed?"]),
    ("lights", "brightness"): (["do something about the lights", "adjust the lights"],
                               ["How bright should they be?", "What brightness level?"]),
    ("lights", "color"): (["change the light colour", "switch the colour of the lights"],
                          ["Warm, cool or neutral?", "Which colour would you like?"]),
    ("lights", "mode"): (["change the lighting mode", "switch the light mode"],
                         ["Static or dynamic?", "Which lighting mode?"]),
    ("speaker", "volume"): (["put some music on", "get the speaker going"],
                            ["What volume?", "How loud?"]),
    ("speaker", "equalizer"): (["change the speaker's EQ", "fiddle with the equalizer"],
                               ["Bass boost, balanced or treble boost?", "Which equalizer setting?"]),
    ("security", "alarm_volume"): (["change the alarm volume", "sort out the alarm volume"],
                                   ["What alarm volume would you like?", "How loud should the alarm be?"]),
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
    "number": ["{w}... no, {v}", "{w}, actually {v}", "{w}, no wait, make it {v}", "w<v|{w}, hmm, a touch more, {v}",
               "w>v|{w}... no, a bit less, {v}"],
    "category": ["{w}... no, {v}", "{w}, sorry, I mean {v}", "{w}, actually no, {v}"],
}

# --- the assistant ----------------------------------------------------------------------
# A confirmation is a subject and fragments: "The TV is now at volume 30, brightness 70 and on Netflix."
DEVICE_SUBJECTS = {
    "tv": ["The TV is now", "The TV is", "TV:"],
    "ac": ["The AC is now", "The AC is", "AC:"],
    "lights": ["The lights are now", "The lights are", "Lights:"],
    "speaker": ["The speaker is now", "The speaker is", "Speaker:"],
    "security": ["The security system is now", "Security is", "Security:"],
}
CONFIRM_FRAGMENTS: dict[tuple[str, str], list[str]] = {
    ("tv", "volume"): ["at volume {v}"],
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
        "mode=cool|Cooling to {temperature} degrees with the fan on {fan_speed}.",
        "mode=auto|AC on auto at {temperature} degrees, fan speed {fan_speed}.",
    ],
    ("ac", ("temperature", "mode")): [
        "mode=heat|Heating to {temperature} degrees.",
        "mode=cool|Cooling the place to {temperature} degrees.",
    ],
    ("security", ("armed", "alarm_volume")): [
        "armed=true|The alarm is armed, volume {alarm_volume}.",
        "armed=false|Security disarmed, alarm volume set to {alarm_volume}.",
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
    ("outdoor_temp=very cold", ["It's bitterly cold outside.", "It's well below freezing out."]),
    ("outdoor_temp=cold", ["Chilly out there.", "It's nippy outside."]),
    ("outdoor_temp=hot", ["It's boiling outside.", "The heat out there is brutal."]),
    ("outdoor_temp=warm", ["Warm one out there.", "Properly warm out today."]),
    ("outdoor_temp=mild", ["Mild out, at least.", "Not too bad out there, temperature-wise."]),
    ("sun_phase=before_sunrise", ["It's still pitch dark out.", "The sun's not even up yet."]),
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
    "morning": ["Good morning! What can I do for you?", "Morning! How can I help?"],
    "afternoon": ["Good afternoon. What do you need?", "Hi! What can I do for you?"],
    "evening": ["Good evening. What can I set up for you?", "Welcome home. What do you need?"],
    "night": ["Hi, I'm here. What can I do for you?", "Hi. What do you need this late?"],
}
WEATHER_QUESTIONS = ["What's it like outside?", "How's the weather looking?", "What's it doing out there?",
                     "Is it nice out?"]
# Descriptions of the context; {period} is the time of day, {day} a day name.
TEMP_WORDS = {"very cold": "bitterly cold", "cold": "cold", "mild": "mild", "warm": "warm", "hot": "hot"}
WEATHER_WORDS = {"sunny": "sunny", "cloudy": "cloudy", "rainy": "rainy", "snowy": "snowy"}
DAY_WORDS = {"weekday": ["weekday", "Tuesday", "Wednesday", "Thursday"], "weekend": ["weekend", "Saturday", "Sunday"]}
WEATHER_ANSWERS = ["It's a {temp}, {weather} {day} {period}.", "{Weather} and {temp} right now.",
                   "It's {temp} out, and {weather}."]
SUN_REMARKS = {"before_sunrise": "The sun isn't up yet.", "after_sunset": "It's dark out already.", "daylight": ""}
ASSISTANT_CONTEXT_REMARKS = ["It's a {temp}, {weather} {period} out there, by the way.",
                             "Heads up: it's {weather} and {temp} outside.", "Quite a {weather} {period}, isn't it?"]
CHAT_REPLIES = ["Ha, I hear you.", "Fair enough.", "I can imagine.", "Well, you're home now.",
                "Sounds like quite a day.", "Noted. I'll keep things easy for you."]
ASSISTANT_CLOSERS = ["Anytime.", "Enjoy your {period}.", "You're welcome. Enjoy the rest of your {period}.",
                     "Happy to help.", "time_of_day=night|Sleep well.", "time_of_day=morning|Have a good day."]
