"""Training: any row of the paper's Tables 1 and 2 with the recipe of §4.2, on one device or many (``torchrun``).

::

    python -m sibnet.train --dataset emotic --data-root data/emotic --variant 'baseline+S (GRU)' --out runs
    python -m sibnet.train --dataset caer --data-root data/caer --model sibnet --seeds 0 1 2 --out runs
    torchrun --nproc_per_node 4 -m sibnet.train --dataset emotic --data-root data/emotic --model sibnet --out runs
    python -m sibnet.train --dataset emotic --data-root anywhere --model sibnet --dry-run   # needs no data

Recipe (§4.2; every value a flag): Adam; lr 1e-4 for the backbone parameters (the three ResNet-18 trunks,
``model.branches``) and 1e-3 for everything else (SCM, ICM, fusion and classifiers); both multiplied by 0.1 at
50 %, 75 % and 87.5 % of the training, counted in optimizer steps so that "7.5 of 10 epochs" is exact;
batch 32 for 10 epochs on EMOTIC, 64 for 20 epochs on CAER-S; the loss of the variant's Table-2 row (BCE on
the fused score, plus BCM 1:1 for the rows with B); ImageNet-pretrained trunks. The paper averages three runs:
seeds 0, 1, 2 are the default (one run per seed, mean ± std reported; ``--seeds 0`` for one).

Model selection uses the validation split only (EMOTIC ``val``; CAER-S ``val`` carved from ``train/``). The
authors' released code selected the checkpoint with the best *test* score, which overstates test results; we
never look at test until the selected checkpoint is final.

Output layout::

    <out>/<run-name>/
        summary.json                 per-seed selected epoch, val and test metric; mean ± std over seeds;
                                     skipped (unreadable images per split) and unlabeled (people left out)
        skipped_images.tsv           only when images were unreadable: split, image, found_by, reason
        seed<k>/
            metrics.jsonl            one JSON object per finished epoch: epoch, step, lrs (per group, first
                                     and last step), train losses, val metric and loss, best so far,
                                     seconds, triples/s
            last.pt                  resume state: model, optimizer, scheduler, scaler, epoch, step,
                                     best-so-far, RNG states, epoch history (torch.save of tensors and
                                     plain containers only; read with torch.load(weights_only=True))
            best/                    the selected checkpoint (sibnet.load_model): config.json +
                                     model.safetensors, training metadata under config.json["training"]
            digest-rank<r>.json      only with --write-digests: hashes of each rank's final weights

A run resumes from ``last.pt`` automatically (or with ``--resume``, which insists on one): a killed run
continues after its last finished epoch, bit-for-bit on CPU. ``last.pt`` is written after every epoch
(atomically) and the log is rewritten from the history it holds, so the log never shows an epoch twice.
Multi-process runs need the output folder on a filesystem every rank can read (resume reads it everywhere).

Modules: :mod:`~sibnet.training.config` (the resolved run and the recipe's constants),
:mod:`~sibnet.training.optim` (Adam, two groups, step-wise decay), :mod:`~sibnet.training.state` (resume,
log, digests), :mod:`~sibnet.training.trainer` (one seed; several seeds), :mod:`~sibnet.training.summary`,
:mod:`~sibnet.training.reproduce` (docs/REPRODUCE.md's table), :mod:`~sibnet.training.cli` (the command line).
"""
