"""Training one seed with the recipe of §4.2, and a run of several seeds.

:meth:`Trainer.fit` is the recipe as a loop: for every epoch, train on the train split, score the validation
split, keep the checkpoint with the best validation metric (the authors' released code kept the epoch with the
best *test* score; test is scored here once, after training, on the selected checkpoint), save the resume
state. Everything else (data, model, optimiser, resume) is set up around it.

Unreadable images never stop a run (unless ``--strict``): see :mod:`sibnet.training.skips`.
"""

from __future__ import annotations

import json
import shutil
import time
import warnings
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm.auto import tqdm

from sibnet.checkpoints import load_model
from sibnet.data.base import check_disjoint
from sibnet.data.masking import BRANCHES, neutral_dropout
from sibnet.distributed import (
    DistContext,
    all_reduce_sum,
    amp_dtype,
    autocast,
    barrier,
    broadcast_buffers,
    broadcast_object,
    init_distributed,
    shutdown,
    unwrap,
)
from sibnet.errors import USER_ERRORS, TrainingError, UnreadableImages, error_message
from sibnet.evaluate import (
    check_labels,
    drop_unreadable,
    eval_loader,
    evaluate_model,
    gather_objects,
    predict,
    skipped_entries,
)
from sibnet.losses import ContextLoss
from sibnet.metrics import compute_metrics
from sibnet.models.registry import build_model
from sibnet.training.config import BEST_NAME, LAST_NAME, LOG_NAME, SKIPPED_NAME, SUMMARY_NAME, TrainConfig
from sibnet.training.optim import build_optimizer, build_scheduler, group_lrs
from sibnet.training.skips import SkipLog
from sibnet.training.state import (
    Progress,
    restore_state,
    rng_state,
    save_state,
    seed_everything,
    seeded_generator,
    set_rng_state,
    write_digest,
    write_log,
)
from sibnet.training.summary import SeedResult, format_summary, summarize


class Trainer:
    """Trains one seed of a :class:`TrainConfig`: data, model, optimiser, epochs, selection, resume."""

    def __init__(self, cfg: TrainConfig, seed: int, ctx: DistContext, skips: SkipLog | None = None) -> None:
        self.cfg = cfg
        self.seed = seed
        self.ctx = ctx
        self.skips = skips if skips is not None else SkipLog(cfg.run_dir / SKIPPED_NAME)
        self.dir = cfg.seed_dir(seed)
        self.best_dir = self.dir / BEST_NAME
        self.amp = amp_dtype(ctx.device, cfg.amp)
        self.progress = Progress()

    # -- the recipe ----------------------------------------------------------------------------------------
    def fit(self) -> SeedResult:
        self.setup()
        self.resume()
        if self.progress.epoch >= self.cfg.epochs:
            self._print(
                f"seed {self.seed}: all {self.cfg.epochs} epochs done already; best {self._best_text()}"
            )
        for epoch in range(self.progress.epoch + 1, self.cfg.epochs + 1):
            started = time.perf_counter()
            record = self.train_one_epoch(epoch)
            val = self.validate()
            is_best = self.select(epoch, val)  # on the validation split only, never test
            self.end_epoch(epoch, record, val, is_best, time.perf_counter() - started)
        self.write_digest()
        return self.result(self.test())

    # -- set-up --------------------------------------------------------------------------------------------
    def _open(self, split: str, train: bool) -> Dataset:
        c = self.cfg
        ds = c.spec.open(
            c.data_root,
            split,
            transform=c.model.transform,
            train=train,
            seed=self.seed,
            boxes=c.boxes,
            skip_unreadable=not c.strict,
            **c.dataset_options(),
        )
        check_labels(c.model.labels, ds.labels, where=f"model {c.model.name!r}")
        self.skips.add(split, skipped_entries(ds, {}))  # the box cache's unreadable images
        unlabeled = int(getattr(ds, "unlabeled", 0))
        if unlabeled and split not in self.skips.unlabeled:
            self._print(f"note: {split}: {unlabeled} people without any label left out (sibnet.data.emotic)")
        self.skips.unlabeled[split] = unlabeled
        return ds

    def setup(self) -> None:
        cfg, ctx = self.cfg, self.ctx
        if cfg.batch_size % ctx.world_size:
            raise ValueError(f"--batch-size {cfg.batch_size} does not split over {ctx.world_size} processes")
        self.train_set = self._open("train", train=True)
        self.val_set = self._open("val", train=False)
        self.test_set: Dataset | None = None
        if cfg.evaluate_test:
            try:
                self.test_set = self._open("test", train=False)
            except UnreadableImages:  # --strict: a damaged test split is an error, not a missing one
                raise
            except USER_ERRORS as err:  # a dataset without a test split still trains
                self._print(f"note: no test evaluation ({error_message(err)})")
        check_disjoint({"train": self.train_set, "val": self.val_set, "test": self.test_set})
        # The same (seed, epoch) shuffle on every rank, each rank taking its own slice; a single process is
        # the world-size-1 case, so the data order never depends on the launch mode's RNG use.
        self.sampler = DistributedSampler(
            self.train_set, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=self.seed
        )
        self.train_loader = DataLoader(
            self.train_set,
            batch_size=cfg.batch_size // ctx.world_size,
            sampler=self.sampler,
            num_workers=cfg.workers,
            pin_memory=ctx.device.type == "cuda",
            drop_last=True,  # a last batch of one would break BatchNorm statistics
        )
        self.steps_per_epoch = len(self.train_loader)
        if cfg.max_steps_per_epoch is not None:
            self.steps_per_epoch = min(self.steps_per_epoch, cfg.max_steps_per_epoch)
        if self.steps_per_epoch < 1:
            raise TrainingError(
                f"the train split has {len(self.train_set)} items, fewer than one batch of {cfg.batch_size}; "
                "lower --batch-size"
            )
        self.val_loader = eval_loader(self.val_set, cfg.eval_batch_size, cfg.workers, ctx)

        seed_everything(self.seed)
        self.model = self._build_model().to(ctx.device)
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = build_scheduler(self.optimizer, self.steps_per_epoch * cfg.epochs, cfg)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp == torch.float16 else None
        self.loss_fn = ContextLoss(cfg.loss)
        # BCM's distribution labels are drawn from their own generator, per rank, saved in last.pt.
        self.bcm_generator = seeded_generator(self.seed, ctx.rank, 0xBC)
        self.net: nn.Module = self.model
        if ctx.enabled:
            # Branch heads that no loss term uses (a BCM model trained with --bcm none) get no gradient.
            unused = cfg.model.branch_heads and cfg.loss.bcm is None
            self.net = DistributedDataParallel(
                self.model,
                device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
                find_unused_parameters=unused,
            )
        self.fingerprint = json.dumps(
            {
                "variant": cfg.variant,
                "model": cfg.model.to_dict(),
                "loss": cfg.loss.to_dict(),
                "dataset": cfg.dataset,
                "recipe": cfg.recipe(),
                "seed": self.seed,
                "steps_per_epoch": self.steps_per_epoch,
            },
            sort_keys=True,
        )

    def _build_model(self) -> nn.Module:
        # Only rank 0 fetches ImageNet weights; DDP copies rank 0's parameters to the others when it wraps the
        # model. The outcome is broadcast so a failure stops every rank instead of leaving them waiting.
        error, model = None, None
        if self.ctx.is_main:
            try:
                model = build_model(self.cfg.model, pretrained=self.cfg.pretrained)
            except USER_ERRORS as err:
                error = error_message(err)
        error = broadcast_object(self.ctx, error)
        if error is not None:
            raise TrainingError(error)
        return model if model is not None else build_model(self.cfg.model, pretrained=False)

    def _print(self, text: str) -> None:
        if self.ctx.is_main:
            print(text, flush=True)

    # -- resume -------------------------------------------------------------------------------------------
    def resume(self) -> None:
        """Continue from ``last.pt`` when there is one (or start over with ``--overwrite``)."""
        last = self.dir / LAST_NAME
        if self.cfg.overwrite:
            if self.ctx.is_main and self.dir.exists():
                shutil.rmtree(self.dir)
            barrier(self.ctx)
        elif last.is_file():
            self.progress, rngs = restore_state(
                last,
                device=self.ctx.device,
                fingerprint=self.fingerprint,
                model=unwrap(self.model),
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                scaler=self.scaler,
            )
            set_rng_state(rngs[self.ctx.rank] if self.ctx.rank < len(rngs) else rngs[0], self.bcm_generator)
            self._print(
                f"resumed {last}: {self.progress.epoch}/{self.cfg.epochs} epochs done, best {self._best_text()}"
            )
        elif self.cfg.resume:
            raise TrainingError(f"--resume: no resume state at {last}")
        if self.ctx.is_main:
            self.dir.mkdir(parents=True, exist_ok=True)
            write_log(self.dir / LOG_NAME, self.progress.history)
        barrier(self.ctx)

    def _save_state(self) -> None:
        # Every rank's RNG state goes into the file (gathered to rank 0) so each resumes its own stream.
        rngs = [rng_state(self.bcm_generator)]
        if self.ctx.enabled:
            gathered: list[Any] = [None] * self.ctx.world_size
            torch.distributed.all_gather_object(gathered, rngs[0])
            rngs = gathered
        if self.ctx.is_main:
            save_state(
                self.dir / LAST_NAME,
                fingerprint=self.fingerprint,
                progress=self.progress,
                model=unwrap(self.model),
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                scaler=self.scaler,
                rngs=rngs,
            )

    def _best_text(self) -> str:
        if self.progress.best_epoch == 0:
            return "none yet"
        return (
            f"val {self.cfg.metric} {100 * self.progress.best_value:.2f}% at epoch {self.progress.best_epoch}"
        )

    # -- one epoch ----------------------------------------------------------------------------------------
    def train_one_epoch(self, epoch: int) -> dict[str, Any]:
        """One pass (at most ``steps_per_epoch`` steps) over the training split; returns the epoch's losses."""
        cfg, ctx = self.cfg, self.ctx
        self.net.train()
        self.sampler.set_epoch(epoch)
        if hasattr(self.train_set, "set_epoch"):
            self.train_set.set_epoch(epoch)  # reproducible random crops (same on every rank and worker)
        lrs_start = lrs_last = group_lrs(self.optimizer)
        sums = [0.0, 0.0, 0.0, 0.0]  # total, fused, branch (each × batch), samples
        unreadable: dict[int, str] = {}
        bar = tqdm(
            total=self.steps_per_epoch,
            desc=f"seed {self.seed} epoch {epoch}/{cfg.epochs}",
            disable=not (cfg.progress and ctx.is_main),
            leave=False,
        )
        started = time.perf_counter()
        for i, batch in enumerate(self.train_loader):
            if i >= self.steps_per_epoch:
                break
            if "ok" in batch:  # a skipping dataset: leave out what could not be decoded
                batch = drop_unreadable(batch, unreadable)
                short = batch is None or len(batch["index"]) < 2  # BatchNorm needs two items
                if ctx.enabled:  # every rank skips the step together, or DDP's all-reduce would wait forever
                    short = all_reduce_sum(ctx, [float(short)])[0] > 0
                if short:
                    with warnings.catch_warnings():  # "lr_scheduler.step() before optimizer.step()": meant
                        warnings.simplefilter("ignore", UserWarning)
                        self.scheduler.step()  # the schedule stays on its steps
                    self.progress.step += 1
                    bar.update(1)
                    continue
            inputs = [batch[k].to(ctx.device, non_blocking=True) for k in BRANCHES]
            if cfg.neutral_dropout:
                # Drawn from (seed, rank, step) alone: a resumed run replays them without a saved state.
                drop = seeded_generator(self.seed, ctx.rank, 0x0E, self.progress.step)
                inputs = list(neutral_dropout(inputs, cfg.model.transform, cfg.neutral_dropout, drop))
            target = batch["target"].to(ctx.device, non_blocking=True)
            with autocast(ctx.device, self.amp):  # bf16 (or fp16 + GradScaler) on CUDA, fp32 on CPU
                out = self.net(*inputs)
            losses = self.loss_fn(out.logits, target, out.branch_logits, generator=self.bcm_generator)
            if not torch.isfinite(losses.total):
                raise TrainingError(
                    f"loss became {losses.total.item()} at epoch {epoch}, step {i + 1}; lower the learning rates "
                    f"(the run resumes from epoch {self.progress.epoch} once fixed)"
                )
            self.optimizer.zero_grad(set_to_none=True)
            lrs_last = group_lrs(self.optimizer)  # the lr this step runs at
            if self.scaler is not None:
                self.scaler.scale(losses.total).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                losses.total.backward()
                self.optimizer.step()
            self.scheduler.step()
            self.progress.step += 1
            n = target.shape[0]
            sums[0] += losses.total.item() * n
            sums[1] += losses.fused.item() * n
            sums[2] += losses.branch.item() * n
            sums[3] += n
            bar.update(1)
            bar.set_postfix(loss=f"{sums[0] / sums[3]:.4f}")
        bar.close()
        seconds = time.perf_counter() - started
        total, fused, branch, samples = all_reduce_sum(ctx, sums)
        merged = {i: e for part in gather_objects(ctx, unreadable) for i, e in part.items()}
        self.skips.add("train", skipped_entries(self.train_set, merged))
        if not samples:
            example = next(iter(self.skips.by_split["train"].values()), None)
            shown = f", e.g. {example['image']}: {example['reason']}" if example else ""
            raise TrainingError(f"epoch {epoch}: no training item could be read{shown}")
        return {
            # [lr of the epoch's first step, lr of its last step], per parameter group
            "lrs": {k: [lrs_start[k], lrs_last[k]] for k in lrs_start},
            "train": {"loss": total / samples, "fused": fused / samples, "branch": branch / samples},
            "samples": int(samples),
            "train_seconds": seconds,
        }

    def validate(self) -> dict[str, Any]:
        """The validation metric and fused loss of the current weights, scores gathered over all ranks."""
        started = time.perf_counter()
        model = unwrap(self.model)
        broadcast_buffers(self.ctx, model)  # rank 0's BatchNorm statistics everywhere (see distributed.py)
        # Scored in float32 whatever the training precision: under bf16 autocast the logits collapse to a few
        # hundred distinct values per class and bias mAP by ~0.02 pp, the size of some Table-2 gaps.
        preds = predict(
            model, self.val_loader, ctx=self.ctx, amp=None, progress=self.cfg.progress, desc="val"
        )
        self.skips.add("val", skipped_entries(self.val_set, preds.unreadable))
        if not len(preds.indices):
            raise TrainingError(f"no validation item could be read (see {self.skips.path})")
        report = compute_metrics(
            preds.targets, preds.logits, list(self.val_set.labels), self.cfg.model.multi_label
        )
        loss = self.loss_fn.fused_loss(torch.from_numpy(preds.logits), torch.from_numpy(preds.targets))
        return {
            "metric": report.metric,
            "value": report.value,
            "loss": float(loss),
            "n": report.num_samples,
            "seconds": time.perf_counter() - started,
        }

    def select(self, epoch: int, val: dict[str, Any]) -> bool:
        """Keep this epoch's weights as ``best/`` when its validation metric is the best so far."""
        if val["value"] <= self.progress.best_value:
            return False
        self.progress.best_value, self.progress.best_epoch = val["value"], epoch
        if self.ctx.is_main:
            unwrap(self.model).save_pretrained(self.best_dir, training=self._training_metadata(epoch, val))
        return True

    def end_epoch(
        self, epoch: int, record: dict[str, Any], val: dict[str, Any], is_best: bool, seconds: float
    ) -> None:
        """Log the epoch, then save the resume state and rewrite the log from it."""
        p = self.progress
        p.epoch = epoch
        val_seconds = val.pop("seconds")
        p.history.append(
            {
                "epoch": epoch,
                "step": p.step,
                "lrs": record["lrs"],
                "train": record["train"],
                "val": val,
                "is_best": is_best,
                "best": {"epoch": p.best_epoch, "value": p.best_value},
                "seconds": {"train": record["train_seconds"], "val": val_seconds, "epoch": seconds},
                "triples_per_s": record["samples"] / max(record["train_seconds"], 1e-9),
                "samples": record["samples"],
            }
        )
        self._save_state()  # first the state, then the log rewritten from it
        if self.ctx.is_main:
            write_log(self.dir / LOG_NAME, p.history)
            self.skips.write()
        self._print(
            f"seed {self.seed} epoch {epoch}/{self.cfg.epochs}: loss {record['train']['loss']:.4f}, val "
            f"{val['metric']} {100 * val['value']:.2f}%{' (best)' if is_best else ''}, "
            f"{p.history[-1]['triples_per_s']:.1f} triples/s, {seconds:.1f} s"
        )

    def _training_metadata(self, epoch: int, val: dict[str, Any]) -> dict[str, Any]:
        cfg = self.cfg
        return {
            "variant": cfg.variant,
            "loss": cfg.loss.to_dict(),
            "dataset": cfg.dataset,
            "epoch": epoch,
            "epochs": cfg.epochs,
            "val_metric": {"name": val["metric"], "value": val["value"], "split": "val"},
            "seed": self.seed,
            "recipe": {
                **cfg.recipe(),
                "steps_per_epoch": self.steps_per_epoch,
                "world_size": self.ctx.world_size,
            },
            "paper": cfg.paper,
        }

    # -- after training -----------------------------------------------------------------------------------
    def write_digest(self) -> None:
        """With ``--write-digests``: every rank writes the SHA-256 of its final weights (DDP checks)."""
        if self.cfg.write_digests:
            broadcast_buffers(self.ctx, unwrap(self.model))
            write_digest(self.dir, self.ctx.rank, self.ctx.world_size, unwrap(self.model))
        barrier(self.ctx)

    def test(self) -> dict[str, Any] | None:
        """The selected checkpoint scored once on the test split (None without a test split)."""
        if self.test_set is None:
            return None
        if not (self.best_dir / "model.safetensors").is_file():
            raise TrainingError(f"no selected checkpoint at {self.best_dir}; the run folder is incomplete")
        best = load_model(self.best_dir, device=self.ctx.device)
        report = evaluate_model(
            best,
            self.test_set,
            batch_size=self.cfg.eval_batch_size,
            workers=self.cfg.workers,
            ctx=self.ctx,
            amp=None,  # float32, as validation
            progress=self.cfg.progress,
            desc="test",
        )
        self.skips.add("test", [s for s in report.skipped if s["found_by"] == "loader"])
        self._print(
            f"seed {self.seed}: selected epoch {self.progress.best_epoch} (val "
            f"{100 * self.progress.best_value:.2f}%), test {report.metric} {100 * report.value:.2f}%"
        )
        return report.to_dict()

    def result(self, test_report: dict[str, Any] | None) -> SeedResult:
        return SeedResult(
            seed=self.seed,
            best_epoch=self.progress.best_epoch,
            val=self.progress.best_value,
            test=None if test_report is None else test_report["value"],
            epochs_done=self.progress.epoch,
            best_dir=str(self.best_dir),
            test_report=test_report,
        )


def train(cfg: TrainConfig, ctx: DistContext | None = None) -> dict[str, Any]:
    """Train every seed of ``cfg`` and write ``summary.json``; returns the summary.

    Raises:
        FileNotFoundError, DatasetError, PretrainedWeightsUnavailable, TrainingError, ValueError: see the
        messages; the command line prints them as one ``error:`` line.
    """
    own_ctx = ctx is None
    ctx = ctx or init_distributed(cfg.device)
    try:
        if ctx.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels
        skips = SkipLog(cfg.run_dir / SKIPPED_NAME)
        results = [Trainer(cfg, seed, ctx, skips).fit() for seed in cfg.seeds]
        summary = summarize(cfg, results)
        summary["skipped"] = skips.to_dict()  # unreadable images left out, per split
        summary["unlabeled"] = dict(skips.unlabeled)  # people without any label left out, per split
        if ctx.is_main:
            cfg.run_dir.mkdir(parents=True, exist_ok=True)
            skips.write()
            (cfg.run_dir / SUMMARY_NAME).write_text(json.dumps(summary, indent=2) + "\n")
            print(format_summary(summary))
            if skips.line():
                print(skips.line())
            print(f"wrote {cfg.run_dir / SUMMARY_NAME}")
        return summary
    finally:
        if own_ctx:
            shutdown(ctx)
