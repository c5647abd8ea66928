"""Prompt pairs with numbers in them, labelled: is the second a take of the first (one group),
or another prompt (two groups)? The evidence for what a number means (docs/ml.md,
`take_numbers`), written as prompt sheets write them.

Kinds:

- ``templated``: a sheet made from a template, the number a slot of it ("prompt group 7:
  thunder over a lake", "scene 12 - ...", "room 101 ..."): other prompts;
- ``takes``: takes of one prompt, numbered after a marker ("take 3", "v2", "version 2",
  "seed 42", "#3", "(2)") or by a bare number ending the prompt ("glass break 02",
  "explosion_01"): one prompt;
- ``numbered``: a number that names what is asked for, inside the prompt ("1980s radio",
  "808 kick", "3 gunshots", "60 hz hum"): other prompts;
- ``same numbers``: the same numbers, the words a near-copy (a take, word order): one prompt;
- ``number at the end``: a number that names what is asked for, ending the prompt ("a clock
  striking 12", "elevator at floor 3"): other prompts, which a bare number ending the prompt
  cannot tell from a take's (the default rule takes them for takes; ``marked`` does not).
"""

KINDS = ("templated", "takes", "numbered", "same numbers", "number at the end")
SAME = {"takes": True, "same numbers": True}  # the others: other prompts

PAIRS: dict[str, list[tuple[str, str]]] = {
    "templated": [
        ("prompt group 7: thunder over a lake", "prompt group 8: thunder over a lake"),
        ("prompt group 1: thunder over a lake", "prompt group 40: thunder over a lake"),
        ("scene 12 - dog barking in a park", "scene 13 - dog barking in a park"),
        ("level 2 ambience: dripping cave", "level 3 ambience: dripping cave"),
        ("batch 4, item 17: metal door slam", "batch 4, item 18: metal door slam"),
        ("room 101 footsteps on wood", "room 102 footsteps on wood"),
        ("track 07 - rainy night lo-fi loop", "track 08 - rainy night lo-fi loop"),
        ("episode 3 opening sting, bright brass", "episode 4 opening sting, bright brass"),
        ("sfx_041 whoosh, fast", "sfx_042 whoosh, fast"),
        ("npc 12 footsteps on gravel", "npc 13 footsteps on gravel"),
        ("wave 5 enemy spawn sound", "wave 6 enemy spawn sound"),
        ("Cue 21: tense strings rising", "Cue 22: tense strings rising"),
    ],
    "takes": [
        ("explosion, take 3", "explosion, take 4"),
        ("metal door slam v2", "metal door slam v3"),
        ("laser zap #3", "laser zap #7"),
        ("footsteps on snow (2)", "footsteps on snow"),
        ("thunder clap take 1", "thunder clap"),
        ("rain on a tin roof - version 2", "rain on a tin roof - version 5"),
        ("sword swing alt 2", "sword swing, alt 3"),
        ("whoosh, seed 42", "whoosh, seed 7"),
        ("take 2: dog barking", "take 5: dog barking"),
        ("magic spell var2", "magic spell var3"),
        ("wind gust, v1", "Wind gust V4"),
        ("coin pickup #12, bright", "coin pickup #13, bright"),
        ("glass break 02", "glass break 03"),
        ("car passing by 3", "car passing by 4"),
        ("explosion_01", "explosion_02"),
        ("crowd cheering in a stadium 1", "crowd cheering in a stadium 2"),
    ],
    "numbered": [
        ("1980s radio static", "1990s radio static"),
        ("808 kick drum", "909 kick drum"),
        ("3 gunshots in a canyon", "5 gunshots in a canyon"),
        ("2 dogs barking at a mailman", "3 dogs barking at a mailman"),
        ("a 60 hz mains hum", "a 50 hz mains hum"),
        ("engine idling at 800 rpm", "engine idling at 3000 rpm"),
        ("vintage 1950s jukebox song", "vintage 1970s jukebox song"),
        ("5.1 surround rain", "7.1 surround rain"),
        ("knock 3 times on a wooden door", "knock 2 times on a wooden door"),
        ("an 8-bit coin pickup", "a 16-bit coin pickup"),
        ("a 747 taking off", "a 737 taking off"),
        ("3 short beeps then silence", "2 short beeps then silence"),
    ],
    "same numbers": [
        ("3 gunshots in a canyon", "3 gunshots in a canyon, take 2"),
        ("1980s radio static", "static, 1980s radio"),
        ("808 kick drum, punchy", "punchy 808 kick drum v2"),
        ("a 60 hz mains hum", "a 60 hz mains hum (3)"),
        ("prompt group 7: thunder over a lake", "prompt group 7: thunder over a lake, take 2"),
        ("engine idling at 800 rpm", "Engine idling at 800 RPM #4"),
    ],
    "number at the end": [
        ("a clock striking 12", "a clock striking 3"),
        ("countdown from 10", "countdown from 5"),
        ("phone keypad dialing 911", "phone keypad dialing 411"),
        ("elevator arriving at floor 3", "elevator arriving at floor 7"),
        ("radio tuned to channel 4", "radio tuned to channel 9"),
    ],
}
assert tuple(PAIRS) == KINDS


def labelled() -> list[tuple[str, str, str, bool]]:
    """(kind, prompt, other prompt, one group?) for every pair."""
    return [(kind, a, b, SAME.get(kind, False)) for kind in KINDS for a, b in PAIRS[kind]]
