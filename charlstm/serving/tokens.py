"""The tokenizer's endpoints in vLLM's shapes, token-id prompts, and the prompt's own log-probabilities.

    POST /tokenize        {"prompt", "add_special_tokens", "model"} -> {"tokens", "count", "max_model_len"}
    POST /detokenize      {"tokens", "model"} -> {"prompt"}
    GET  /tokenizer_info  the tokenizer's description (``?model=`` when several runs are served)

lm-evaluation-harness's ``local-completions`` finds a server's tokenizer through these, then
sends token-id prompts with ``echo`` and ``logprobs`` and reads the prompt's own
log-probabilities. charlstm reads a text from a start token (a newline: the ``bos_token`` here):
``add_special_tokens`` puts it first, and a prompt's log-probabilities are those of ``charlstm
score``, each token read after the start token and the tokens before it (``score_tokens``), so
the sum over a continuation is ``Model.score(context + continuation) - Model.score(context)``.
The first token's is ``null``, as OpenAI reports it.
"""

from __future__ import annotations

from charlstm.data.tokenizers import default_start_id
from charlstm.errors import CharlstmError
from charlstm.serving.errors import ApiError, bad_field
from charlstm.serving.models import ServedModel
from charlstm.serving.requests import Limits, _bool, _is_int, _model, _shown

TOKENIZER_CLASSES = {"char": "CharTokenizer", "byte": "ByteTokenizer"}  # else SentencePieceTokenizer


def _object(body, fields: set[str]) -> dict:
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object", code="invalid_json")
    unknown = sorted(set(body) - fields)
    if unknown:
        raise bad_field(unknown[0], "unknown field")
    return body


def parse_tokenize(body, limits: Limits) -> tuple[str | None, str, bool, bool]:
    """(model, prompt, add_special_tokens, return_token_strs) of a /tokenize body."""
    body = _object(body, {"model", "prompt", "add_special_tokens", "return_token_strs"})
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise bad_field("prompt", f"must be a string (got {_shown(prompt)})" if "prompt" in body else "is required")
    if len(prompt) > limits.max_prompt_chars:
        raise bad_field("prompt", f"is {len(prompt):,} characters; the limit is {limits.max_prompt_chars:,}")
    special = True if body.get("add_special_tokens") is None else _bool(body, "add_special_tokens")
    return _model(body), prompt, special, _bool(body, "return_token_strs")


def parse_detokenize(body, limits: Limits) -> tuple[str | None, list[int]]:
    """(model, tokens) of a /detokenize body."""
    body = _object(body, {"model", "tokens"})
    tokens = body.get("tokens")
    if not isinstance(tokens, list) or not all(_is_int(t) and t >= 0 for t in tokens):
        raise bad_field("tokens", "must be a list of token ids (whole numbers from 0)" if "tokens" in body else "is required")
    if len(tokens) > limits.max_prompt_chars:
        raise bad_field("tokens", f"holds {len(tokens):,} ids; the limit is {limits.max_prompt_chars:,}")
    return _model(body), tokens


def check_ids(model: ServedModel, ids, field: str) -> list[int]:
    """``ids`` when each is in the model's vocabulary, else 400 naming ``field``."""
    size = len(model.token_bytes)
    bad = [t for t in ids if t >= size]
    if bad:
        raise bad_field(field, f"token id {bad[0]} is out of range: the model's vocabulary has ids 0-{size - 1}")
    return list(ids)


def prompt_ids(model: ServedModel, prompt: str | tuple[int, ...]) -> tuple[str, list[int]]:
    """A completions prompt's text and token ids: a string encoded as ``charlstm sample --prime``
    encodes it (an empty one is the start token), token ids checked and decoded."""
    if isinstance(prompt, str):
        from charlstm.generation.text import encode_prime

        try:
            return prompt, encode_prime(model.tokenizer, prompt, "prompt")
        except CharlstmError as e:
            raise bad_field("prompt", str(e).removeprefix("prompt ")) from None
    ids = check_ids(model, prompt, "prompt")
    return model.tokenizer.decode(ids), ids


def tokenize(model: ServedModel, prompt: str, add_special_tokens: bool, token_strs: bool, limits: Limits) -> dict:
    """vLLM's answer: every character is tokenized (the char vocabulary's unknown symbol stands
    for characters it lacks, as ``charlstm score`` reads them)."""
    ids = [int(t) for t in model.tokenizer.encode(prompt)]
    if add_special_tokens:
        ids.insert(0, default_start_id(model.tokenizer))
    out = {"count": len(ids), "max_model_len": max_model_len(limits), "tokens": ids}
    if token_strs:
        out["token_strs"] = [model.token_text[t] for t in ids]
    return out


def detokenize(model: ServedModel, tokens: list[int]) -> dict:
    return {"prompt": model.tokenizer.decode(check_ids(model, tokens, "tokens"))}


def max_model_len(limits: Limits) -> int:
    """A recurrent model has no window: the longest prompt the server reads, and what it may add."""
    return limits.max_prompt_chars + limits.max_tokens


def tokenizer_info(model: ServedModel, limits: Limits, chat_template: str | None) -> dict:
    """The tokenizer's description, in the keys of transformers' ``tokenizer_config.json`` as vLLM
    returns them (lm-eval reads ``eos_token`` and ``bos_token``, and ``chat_template``)."""
    tokenizer = model.tokenizer
    unk = tokenizer.unk_id
    return {
        "tokenizer_class": TOKENIZER_CLASSES.get(tokenizer.kind, "SentencePieceTokenizer"),
        "kind": tokenizer.kind,
        "vocab_size": len(model.token_bytes),
        "model_max_length": max_model_len(limits),
        "bos_token": model.token_text[default_start_id(tokenizer)],
        "eos_token": None,
        "pad_token": None,
        "unk_token": None if unk is None else model.token_text[unk],
        "add_bos_token": False,
        "chat_template": chat_template,
    }


def echo_records(model: ServedModel, ids: list[int], top: int) -> dict:
    """The prompt's part of a choice's ``logprobs``: its tokens, their log-probabilities after
    the start token and the tokens before them (the first ``null``), the ``top`` most likely
    tokens at each (``null`` at the first) and each token's offset in the prompt's text."""
    from charlstm.evaluation.score import score_tokens

    scores = score_tokens(model.scorer, model.tokenizer, ids, model.device, top=top)
    texts = [model.token_text[t] for t in ids]
    offsets, at = [], 0
    for text in texts:
        offsets.append(at)
        at += len(text)
    tops = [{model.token_text[i]: v for i, v in pairs} for pairs in scores.top]
    return {
        "tokens": texts,
        "token_logprobs": [None, *scores.logprobs[1:]],
        "top_logprobs": [None, *tops[1:]] if top else [],
        "text_offset": offsets,
    }
