"""Train THSG, two-stage hard sample generation (Zhu et al., arXiv 2021), with the paper's protocols.

    python training_scripts/thsg.py --dataset digits                        # quick CPU check (thsg_digits)
    python training_scripts/thsg.py --dataset cub200 --data-dir DATA        # Sec. 6.2: InceptionV3, 512-d, 227 px
    python training_scripts/thsg.py --dataset cars196 --data-dir DATA --preset thsg_cars196_resnet50 \\
        --miner distance-weighted                                           # Sec. 6.5: THSG(D), ResNet50, 128-d
    python training_scripts/thsg.py --dataset sop --data-dir DATA --epochs 100

``--miner`` picks the triplets of L_org (random = THSG; semi-hard, soft-hard, distance-weighted =
THSG(Semi/Soft/D), eq. 25). The Table 2 hyperparameters come with each dataset's preset.
"""

from zoo.training import run_script, script_parser

if __name__ == "__main__":
    run_script(script_parser("thsg", __doc__), refused=("loss",),
               refusal="THSG's metric loss is the triplet loss of eq. (6): choose its triplets with --miner")
