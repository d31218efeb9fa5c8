"""Run by tests/test_ddp.py: 2-process CPU DDP, each rank writes the images it trained on."""

import json
import sys

import lightning as L

from cifar_lightning import CIFARClassifier, CIFARDataModule


class RecordShard(L.Callback):
    def __init__(self):
        self.seen = {}

    def on_train_epoch_start(self, trainer, pl_module):
        loader = trainer.train_dataloader
        self.seen[trainer.current_epoch] = loader.sampler.indices().tolist()

    def on_train_end(self, trainer, pl_module):
        with open(f"{sys.argv[2]}/rank{trainer.global_rank}.json", "w") as f:
            json.dump(
                {"world_size": trainer.world_size, "seen": self.seen, "batches": len(trainer.train_dataloader)}, f
            )


if __name__ == "__main__":
    dm = CIFARDataModule("cifar10", sys.argv[1], batch_size=20, download=False, seed=7)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[RecordShard()],
    )
    trainer.fit(CIFARClassifier("small_cnn", 10), datamodule=dm)
