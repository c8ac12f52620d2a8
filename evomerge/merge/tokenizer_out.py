"""The merged model's tokenizer files when ``tokenizer.source: union`` added tokens to the base's.

The output tokenizer is the base model's, unchanged (normalizer, pre-tokenizer, special tokens, chat
template), with the other models' tokens appended as *added tokens* at the ids the planner gave them. A
token that was an added or special token in its model keeps that model's settings (``special``,
``lstrip`` ...); a token of a model's own vocabulary becomes a plain added token (matched in the text as
is, as mergekit does). Ids are written explicitly and then checked by loading the result, so the token →
row correspondence of the merged embeddings can never drift. The chat template is the base's; when the
base has none, the first model in recipe order that has one lends it (its tokens are in the union now).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from evomerge.errors import CheckpointError
from evomerge.merge.vocab_union import NewToken

PLAIN_TOKEN = {"single_word": False, "lstrip": False, "rstrip": False, "normalized": True, "special": False}
"""Settings of a vocabulary token carried over as an added token (transformers' defaults for add_tokens)."""
CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")


def union_tokenizer_files(folder: Path, added: Sequence[NewToken]) -> dict[str, str]:
    """File name → new text of the tokenizer files of ``folder`` that the ``added`` tokens change.

    The other tokenizer files of ``folder`` are copied as they are.
    """
    data = _tokenizer_json(folder)
    entries = [_entry(t) for t in added]
    data["added_tokens"] = [*(data.get("added_tokens") or []), *entries]
    text = json.dumps(data, ensure_ascii=False, indent=2)
    _check_ids(text, added, folder)
    files = {"tokenizer.json": text}
    config_path = folder / "tokenizer_config.json"
    if config_path.is_file():
        files["tokenizer_config.json"] = json.dumps(_tokenizer_config(_json(config_path), entries), ensure_ascii=False,
                                                    indent=2) + "\n"
    added_path = folder / "added_tokens.json"
    if added_path.is_file():
        ids = {**_json(added_path), **{t.token: t.id for t in added}}
        files["added_tokens.json"] = json.dumps(ids, ensure_ascii=False, indent=2) + "\n"
    return files


def _entry(token: NewToken) -> dict[str, Any]:
    settings = {**PLAIN_TOKEN, **dict(token.settings or {})}
    return {"id": token.id, "content": token.token, **{k: bool(settings[k]) for k in PLAIN_TOKEN}}


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def _tokenizer_json(folder: Path) -> dict[str, Any]:
    """``folder``'s ``tokenizer.json``, converted by transformers from slow-tokenizer files when absent."""
    path = folder / "tokenizer.json"
    if path.is_file():
        return _json(path)
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(folder))
        with tempfile.TemporaryDirectory() as tmp:
            tok.save_pretrained(tmp)
            return _json(Path(tmp) / "tokenizer.json")
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{folder}: its tokenizer cannot be turned into a tokenizer.json to extend ({exc})") from None


def _check_ids(text: str, added: Sequence[NewToken], folder: Path) -> None:
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_str(text).get_vocab(with_added_tokens=True)
    wrong = [t for t in added if vocab.get(t.token) != t.id]
    if wrong:
        t = wrong[0]
        raise CheckpointError(f"{folder}: extending its tokenizer put token {t.token!r} at id {vocab.get(t.token)}, "
                              f"not at its merged row {t.id}")


def _tokenizer_config(config: Mapping[str, Any], entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``tokenizer_config.json`` with the new tokens in its added-token table and special-token list."""
    out = dict(config)
    decoder = out.get("added_tokens_decoder")
    if isinstance(decoder, dict):
        out["added_tokens_decoder"] = {**decoder, **{str(e["id"]): {k: v for k, v in e.items() if k != "id"}
                                                     for e in entries}}
    specials = [str(e["content"]) for e in entries if e["special"]]
    for key in ("extra_special_tokens", "additional_special_tokens"):
        if isinstance(out.get(key), list) and specials:
            out[key] = [*out[key], *[s for s in specials if s not in out[key]]]
            break
    return out


def _chat_template(folder: Path) -> dict[str, str]:
    """``folder``'s chat template as output files (empty when it has none)."""
    for name in CHAT_TEMPLATE_FILES:
        if (folder / name).is_file():
            return {name: (folder / name).read_text()}
    config = folder / "tokenizer_config.json"
    template = _json(config).get("chat_template") if config.is_file() else None
    return {"chat_template.jinja": template} if isinstance(template, str) and template else {}


def borrowed_chat_template(folders: Sequence[Path], target: int) -> dict[str, str]:
    """Chat-template files for the output when the target's tokenizer has none: the first other model's."""
    if _chat_template(folders[target]):
        return {}
    for index, folder in enumerate(folders):
        files = _chat_template(folder) if index != target else {}
        if files:
            return files
    return {}
