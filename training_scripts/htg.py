"""Train HTG, adversarial hard triplet generation (Zhao et al., ECCV 2018).

    python training_scripts/htg.py --dataset digits                         # quick CPU check (htg_digits)
    python training_scripts/htg.py --dataset digits --publish htg_digits
    python training_scripts/htg.py --dataset cub200 --data-dir DATA         # InceptionV3, 512-d, 227 px
    python training_scripts/htg.py --dataset cars196 --data-dir DATA --miner random

``--miner`` picks the triplets that the generator G turns into hard ones (semi-hard by default). F's loss
is the triplet loss on those triplets and on G's (zoo/methods/htg.py: f_loss), so --loss does not apply.
"""

from zoo.training import run_script, script_parser

if __name__ == "__main__":
    run_script(script_parser("htg", __doc__), refused=("loss",),
               refusal="HTG trains F with the triplet loss on G's hard triplets: choose its triplets with --miner")
