"""Train the baseline: triplet loss (or contrastive / margin / ...) with a pluggable miner.

    python training_scripts/triplet.py --dataset digits                      # quick CPU check
    python training_scripts/triplet.py --dataset cub200 --data-dir DATA      # preset triplet_cub200
    python training_scripts/triplet.py --dataset cars196 --data-dir DATA --miner distance-weighted --loss margin
"""

from zoo.training import run_script, script_parser

if __name__ == "__main__":
    run_script(script_parser("triplet", __doc__))
