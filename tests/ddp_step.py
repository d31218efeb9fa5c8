"""Run by tests/test_field_faults.py: one optimizer step of a recipe from given weights,
under a layout of processes and accumulation; rank 0 saves the model's weights after it.

    python tests/ddp_step.py DATA WEIGHTS OUT MODEL DEVICES BATCH ACCUMULATE
"""

import sys
from dataclasses import asdict

import lightning as L
import torch

from cifar_lightning import CIFARClassifier, CIFARDataModule, get_recipe

if __name__ == "__main__":
    data, weights, out, model, devices, batch, accumulate = sys.argv[1:8]
    devices, batch, accumulate = int(devices), int(batch), int(accumulate)
    recipe = get_recipe(model).with_overrides(batch_size=batch)
    dm = CIFARDataModule(
        "cifar10",
        data,
        batch_size=batch,
        download=False,
        seed=recipe.seed,
        train_subset=50,
        **asdict(recipe.augmentation),
    )
    module = CIFARClassifier(
        model, 10, recipe=recipe.to_dict(), model_kwargs={"dropout": 0.0} if model == "small_cnn" else None
    )
    module.model.load_state_dict(torch.load(weights, weights_only=True))
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        max_steps=1,
        accumulate_grad_batches=accumulate,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(module, datamodule=dm)
    if trainer.global_rank == 0:
        torch.save(module.model.state_dict(), out)
