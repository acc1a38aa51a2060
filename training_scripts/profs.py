"""Train PROFS (Can, Gürbüz, Alatan): alternating projections onto feasible sets, with HNCM.

    python training_scripts/profs.py --dataset digits                           # preset profs_digits, CPU
    python training_scripts/profs.py --dataset cub200 --data-dir DATA           # T-PROFS-HNCM, Sec. 5.2
    python training_scripts/profs.py --dataset sop --data-dir DATA --loss contrastive --miner hard
    python training_scripts/profs.py --dataset cars196 --data-dir DATA --no-hncm --steps-per-projection 20

The presets follow Sec. 5.2: InceptionV3 (the zoo's GoogLeNet stand-in), 512-d embedding, 224 px
crops, Adam with lr 1e-4 (SOP) or 1e-5 (CUB-200, CARS196), batches of 128 = 64 classes x I = 2
images (the representative and one example), 100 epochs, evaluated every epoch so that the best
epoch can be reported; lambda = 1e-3, rho = 6; Adam's beta_2 = 0.99 and a 10x learning rate on the
new embedding layer (``profs.PAPER_OPTIMIZER``, through ``zoo.optimizers.PaperAdam``). Without a
preset the base loss is contrastive (C-PROFS): the semi-hard triplet loss collapses from scratch.
"""

import argparse

from zoo.training import run_script, script_parser

# PROFS flags -> ProfsModel hyperparameters
PROFS_FLAGS = ("proximal_weight", "rho", "steps_per_projection", "hard_negative_class_mining")

if __name__ == "__main__":
    parser = script_parser("profs", __doc__)
    parser.add_argument("--proximal-weight", type=float, help="lambda of eq. 4.6 (1e-3)")
    parser.add_argument("--rho", type=int, help="M = ceil(rho L / P) (6, Sec. 5.4)")
    parser.add_argument("--steps-per-projection", type=int, help="M directly (overrides --rho)")
    parser.add_argument("--hncm", dest="hard_negative_class_mining", action=argparse.BooleanOptionalAction,
                        help="hard negative class mining (on in the presets)")
    run_script(parser, hyperparameters=PROFS_FLAGS)
