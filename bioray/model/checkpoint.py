"""Encoders as Hugging Face folders: an existing checkpoint made safe to load (safetensors only), or a
random initialisation of a given shape with a given vocabulary."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import torch

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def copy_checkpoint(source: Path, target: Path) -> dict:
    """The checkpoint at `source` (config.json, a tokenizer, and model.safetensors or pytorch_model.bin)
    as a folder whose weights are safetensors. A `.bin` file is read by torch's weights-only loader,
    which refuses any pickled object but tensors, so a hostile checkpoint cannot run code."""
    if not (source / "config.json").is_file():
        raise FileNotFoundError(f"{source}: not a Hugging Face checkpoint (no config.json)")
    tokenizer = [name for name in TOKENIZER_FILES if (source / name).is_file()]
    if not tokenizer:
        raise FileNotFoundError(f"{source}: no tokenizer (tokenizer.json or vocab.txt) beside the weights")
    target.mkdir(parents=True)
    for name in ["config.json", *tokenizer]:
        shutil.copy2(source / name, target / name)
    if (source / "model.safetensors").is_file():
        shutil.copy2(source / "model.safetensors", target / "model.safetensors")
    elif (source / "pytorch_model.bin").is_file():
        import transformers
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(str(source))
        model_class = getattr(transformers, (config.architectures or ["AutoModel"])[0])
        state = torch.load(source / "pytorch_model.bin", map_location="cpu", weights_only=True)
        model = model_class.from_pretrained(None, config=config, state_dict=state)
        model.save_pretrained(str(target), safe_serialization=True)
    else:
        raise FileNotFoundError(f"{source}: no weights (model.safetensors or pytorch_model.bin)")
    from safetensors import safe_open

    with safe_open(str(target / "model.safetensors"), "pt") as weights:
        parameters = sum(math.prod(weights.get_slice(name).get_shape()) for name in weights.keys())
    return {"encoder/parameters": parameters}


def random_encoder(tokenizer_dir: Path, shape: dict, seed: int, target: Path) -> dict:
    """A randomly initialised BERT (MLM head included) of `shape` with the tokenizer's vocabulary."""
    from transformers import AutoTokenizer

    from bioray.model.encoder import build_mlm_model

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    torch.manual_seed(seed)
    model = build_mlm_model(len(tokenizer), tokenizer.pad_token_id, **shape)
    model.save_pretrained(str(target), safe_serialization=True)
    tokenizer.save_pretrained(str(target))
    return {"encoder/parameters": sum(p.numel() for p in model.parameters())}


def has_mlm_head(checkpoint: Path) -> bool:
    """Whether an HF checkpoint folder's safetensors weights include a masked-LM head (a sentence-embedding
    model such as all-MiniLM-L6-v2 ships the encoder alone)."""
    from safetensors import safe_open

    for weights in Path(checkpoint).glob("*.safetensors"):
        with safe_open(str(weights), framework="pt") as handle:
            if any(key.startswith("cls.predictions.") for key in handle.keys()):
                return True
    return False
