"""Train AMDAML, adaptive-margin deep adversarial metric learning (Wang et al., IEEE BigDataSecurity 2020).

    python training_scripts/amdaml.py --dataset digits                      # quick CPU check (amdaml_digits)
    python training_scripts/amdaml.py --dataset digits --publish amdaml_digits
    python training_scripts/amdaml.py --dataset cars196 --data-dir DATA     # Sec. IV.5 protocol (amdaml_cars196)

The loss is the adaptive margin loss of eq. 5 on every pair of the batch plus the generated adversarial
negatives (eq. 8), so --loss and --miner do not apply; alpha, beta, lambda, lambda1, lambda2, eps and
the pre-training length come with the preset, and the readings of eq. 6 and 8 (balance, adversary,
closeness, theta_max, target, mix_space) are the defaults measured in zoo/methods/amdaml.py.
"""

from zoo.training import run_script, script_parser

if __name__ == "__main__":
    run_script(script_parser("amdaml", __doc__), refused=("loss", "miner"), refusal="AMDAML's loss is the adaptive "
               "margin loss of eq. 5 on all pairs: --loss and --miner do not apply")
