"""redteam-gym: Gymnasium environments for automated red teaming of language models.

Importing the package registers `RedTeamDialogue-v0` (the agent is the adversary) and
`SafeDialogue-v0` (the agent is the defender), each a single env and a native vector env.
Models load lazily, on `gym.make`; nothing downloads at import.
"""

from gymnasium.envs.registration import register, registry

__version__ = "0.1.0"

if "SafeDialogue-v0" not in registry:
    register(
        id="SafeDialogue-v0",
        entry_point="redteam_gym.envs.safe_dialogue:SafeDialogueEnv",
        vector_entry_point="redteam_gym.envs.safe_dialogue:SafeDialogueVectorEnv",
        disable_env_checker=False,
    )

if "RedTeamDialogue-v0" not in registry:
    register(
        id="RedTeamDialogue-v0",
        entry_point="redteam_gym.envs.dialogue:RedTeamDialogueEnv",
        vector_entry_point="redteam_gym.envs.dialogue:RedTeamDialogueVectorEnv",
        disable_env_checker=False,
    )
