"""festival's non-English voices reading the English texts: accented (second-language) talkers.

Why: Debian packages only five human English talkers across flite and festival (kal, ked, awb,
rms, slt), so a split trains on two or three of them and a detector learns their timbre, not the
phrase. These eight voices are eight more recorded humans (Italian, Finnish and Czech; women, men
and a boy). Each voice's own front end (lexicon, letter-to-sound rules) turns the English text into
its language's phones: "hey nova" becomes Italian /ei nɔva/, Finnish /hey nova/, Czech /hej nova/,
"hey nora" stays /... nora/, and other sentences become accented speech. That is English as
non-native speakers say it, which a wake-word detector must accept too.

Prosody: ``Duration_Stretch`` sets the rate (all eight are diphone voices); their intonation
models take no f0 target, so pitch is reported 1.0 and comes from the DSP perturbation
(``data/perturb``). Rates 16, 22.05 and 32 kHz, read from each wav header. Deterministic.
"""

from __future__ import annotations

from wakeword_dist.data.tts.base import Prosody
from wakeword_dist.data.tts.festival import Festival

# voice -> apt package (Debian main); each voice is its own talker.
PACKAGE = {
    "lp_diphone": "festvox-italp16k",  # Italian, woman
    "pc_diphone": "festvox-itapc16k",  # Italian, man
    "suo_fi_lj_diphone": "festvox-suopuhe-lj",  # Finnish, woman
    "hy_fi_mv_diphone": "festvox-suopuhe-mv",  # Finnish, man
    "czech_dita": "festvox-czech-dita",  # Czech, woman
    "czech_machac": "festvox-czech-machac",  # Czech, man
    "czech_ph": "festvox-czech-ph",  # Czech, man
    "czech_krb": "festvox-czech-krb",  # Czech, boy
}


class FestivalL2(Festival):
    name = "festival-l2"
    voice_packages = PACKAGE
    talkers = {v: f"talker:{v}" for v in PACKAGE}
    apt_packages = ("festival", *PACKAGE.values())

    def applied(self, voice: str, prosody: Prosody) -> Prosody:
        return Prosody(prosody.rate, 1.0)

    def prosody_lines(self, voice: str, prosody: Prosody) -> list[str]:
        return [f"(Parameter.set 'Duration_Stretch {1.0 / prosody.rate:.4f})"]
