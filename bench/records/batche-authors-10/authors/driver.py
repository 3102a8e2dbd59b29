"""Scratch driver (kept with the record): the authors' BatchE (RAIVNLab/supsup, cloned to
/work/scratch/supsup_authors) on CPU, GNu PermutedMNIST, FC 1024-1024, s=500.

Usage: driver.py TASKS ITER_LIM ADAPTOR SEED [CONV_INIT [unshared]], with MNIST extracted under
/tmp/authors_data/mnist/MNIST/raw. Their code needs seaborn, and args.hard_alphas (absent from their args.py).

The recorded runs (seeds 1 and 2) left args.unshared_labels at its default, False: a batch given a wrong
task is still classified and scores what it scores (GNs-like). Every one of their own GNu scripts sets it
True, which scores such a batch 0 as GNu does (and as the harness does): pass "unshared" for that.
"""

import os
import sys

tasks, iters, adaptor, seed = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
init = sys.argv[5] if len(sys.argv) > 5 else "kaiming_normal"
unshared = len(sys.argv) > 6 and sys.argv[6] == "unshared"
sys.argv = [sys.argv[0]]
sys.path.insert(0, "/work/main")
from harness.torchvision_compat import import_torchvision  # noqa: E402

import_torchvision()  # torchvision 0.28 on CPU-only torch
os.chdir("/work/scratch/supsup_authors")
sys.path.insert(0, ".")
from args import args  # noqa: E402
from main import main as run  # noqa: E402

args.set = "MNISTPerm"
args.multigpu = None
args.model = "FC1024"
args.conv_type = "BatchEnsembles"
args.conv_init = init
args.name = f"batche_{adaptor}_{init}_{tasks}x{iters}_seed{seed}"
args.epochs = 3
args.adapt_lrs = [0]
args.eval_ckpts = []
args.num_tasks = tasks
args.adaptor = adaptor
args.output_size = 500
args.lr = 1e-2
args.train_weight_lr = 1e-4
args.optimizer = "adam"
args.no_scheduler = True
args.iter_lim = iters
args.train_weight_tasks = 1
args.save = False
args.data = "/tmp/authors_data"
args.log_dir = "/work/runs_paper/authors_batche"
args.workers = 0
args.seed = seed
args.unshared_labels = unshared
args.hard_alphas = True  # used by BatchEnsembles, absent from args.py: the alphas as given (1/k each for One-Shot)
run()
