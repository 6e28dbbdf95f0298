"""``load`` and the ``Model`` handle: a trained model, ready to write and measure text."""

from __future__ import annotations

import dataclasses
import json
import math
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from charlstm.api.compressing import Compressing
from charlstm.api.measuring import Measuring, PathLike
from charlstm.config import ModelConfig, SampleConfig
from charlstm.runs.checkpoint import ModelInfo

# ----------------------------------------------------------------------------------- records


@dataclass
class Completion:
    """One sample with what made it: ``generate(..., details=True)``; ``to_dict()`` is the record
    ``charlstm sample --json`` prints (it adds ``adapted_to`` after ``sample --adapt-to``)."""

    text: str  # the new text, prime not included
    prime: str
    seed: int  # the seed used (drawn when none was given): the same settings and seed repeat it
    temperature: float
    tokens: int  # tokens drawn
    mean_logprob: float  # mean log-probability per token drawn, nats (nan for none)
    settings: dict  # every other sampling setting, by its flag's name
    finish_reason: str = "length"  # "stop": a stop string, or a pattern's end; "length": --length

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------- the handle


def load(path: PathLike, *, device: str = "auto", weights: str | None = None) -> Model:
    """The model in ``path`` (a run directory: its best checkpoint, else its last; a .pt file;
    or a folder ``charlstm export --format safetensors`` wrote), checked before anything is
    built, on ``device`` (auto: a CUDA GPU, then Apple MPS, then the CPU). ``weights``: how the
    recurrent weights are held when writing and scoring text (fp32 as trained; int8 or bf16,
    lighter: ``--weights``; None: each call's own default, fp32 but for ``compress``); a call's own
    ``weights=`` overrides it."""
    from charlstm.hardware import select_device
    from charlstm.runs.checkpoint import load_model, model_info

    SampleConfig(device=device, weights=weights or "fp32")  # an unknown name: the CLI's message
    torch_device = select_device(device)
    module, tokenizer, payload = load_model(path, torch_device)
    module.eval()  # to write and measure text: dropout off (a call that learns, --adapt, turns it on for itself)
    return Model(module, tokenizer, model_info(module, tokenizer, payload), Path(path), torch_device, device, weights)


class Model(Measuring, Compressing):
    """A trained model, ready to write and measure text (``load`` makes one).

    ``module`` is the ``torch.nn.Module``; ``tokenizer``, ``config`` (``ModelConfig``),
    ``device``, ``path`` and ``info`` (``ModelInfo``) describe it."""

    def __init__(
        self, module, tokenizer, info: ModelInfo, path: Path, device: torch.device, device_setting: str,
        weights: str | None = None,
    ):
        self.module = module
        self.weights = weights  # fp32, int8 or bf16: the default of every call (None: each call's own)
        self.tokenizer = tokenizer
        self.path = path
        self.device = device
        self._device_setting = device_setting  # as asked for ("auto"): what --json records
        self.info = info

    @property
    def config(self) -> ModelConfig:
        return self.module.config

    def __repr__(self) -> str:
        c = self.config
        return (
            f"<charlstm.Model {self.path} {c.cell} {c.num_layers}x{c.hidden_size}, "
            f"{self.info.tokenizer} ({self.info.vocab_size}), {self.info.parameters:,} parameters, {self.device}>"
        )

    # ------------------------------------------------------------------------------ generating

    def _sample_config(self, prime: str, settings: dict) -> SampleConfig:
        from charlstm.generation.engine import check_config
        from charlstm.generation.sampling import encode_prime

        settings["weights"] = self._weights(settings.get("weights"))
        if isinstance(settings.get("json_schema"), dict):
            settings["json_schema"] = json.dumps(settings["json_schema"])
        config = SampleConfig(prime=prime, device=self._device_setting, **settings)
        encode_prime(self.tokenizer, prime)  # characters the vocabulary lacks: one clear line
        check_config(config, self.tokenizer.token_bytes(), self.device)  # a pattern it cannot write, ...
        if config.seed is None:
            config = dataclasses.replace(config, seed=secrets.randbelow(2**31))
        return config

    def generate(
        self,
        prime: str = "",
        *,
        length: int = 500,
        temperature: float = 0.8,
        top_k: int | None = None,
        top_p: float | None = None,
        min_p: float | None = None,
        repetition_penalty: float = 1.0,
        repetition_window: int = 64,
        no_repeat_ngram: int | None = None,
        beam_width: int | None = None,
        num_samples: int = 1,
        seed: int | None = None,
        stop: str | None = None,
        weights: str | None = None,
        cache_size: int = 0,
        cache_theta: float | None = None,
        cache_lambda: float | None = None,
        logit_bias: dict[int, float] | None = None,
        regex: str | None = None,
        json_schema: dict | str | None = None,
        details: bool = False,
    ) -> str | list[str] | Completion | list[Completion]:
        """New text after ``prime`` (not included): a str, or a list of ``num_samples`` of them
        generated together as one batch; with ``details``, ``Completion`` records instead.
        ``beam_width``: the most likely continuation of ``length`` tokens (one, deterministic).
        ``weights``: how the recurrent weights are held while generating (fp32, int8, bf16;
        None: as ``load`` was given). ``cache_size``: mix a neural cache of the last N tokens
        into every draw (``cache_theta``, ``cache_lambda``: chosen on the prime when None), so
        the model copies more of the prime and of what it wrote. ``logit_bias``: token id ->
        bias added to its logit (-100 to 100). ``regex`` / ``json_schema`` (a dict or JSON
        text): write only text that matches (needs ``charlstm[constrain]``); a sample ends where
        it matches and the model writes something the pattern cannot continue with, and one cut
        by ``length`` may not match (``details=True`` tells: ``finish_reason``).
        The same settings and ``seed`` give the same text as ``charlstm sample``."""
        settings = dict(locals())
        for name in ("self", "prime", "details"):
            del settings[name]
        config = self._sample_config(prime, settings)
        if config.beam_width is not None:
            texts, tokens, logprobs, reasons = self._beam(config)
        else:
            texts, tokens, logprobs, reasons = self._sampled(config)
        if not details:
            return texts[0] if num_samples == 1 else texts
        rest = {k: v for k, v in config.to_dict().items() if k not in ("prime", "seed")}
        completions = [
            Completion(text, prime, config.seed, config.temperature, n, lp, dict(rest), reason or "length")
            for text, n, lp, reason in zip(texts, tokens, logprobs, reasons)
        ]
        return completions[0] if num_samples == 1 else completions

    def stream(
        self,
        prime: str = "",
        *,
        length: int = 500,
        temperature: float = 0.8,
        top_k: int | None = None,
        top_p: float | None = None,
        min_p: float | None = None,
        repetition_penalty: float = 1.0,
        repetition_window: int = 64,
        no_repeat_ngram: int | None = None,
        beam_width: int | None = None,
        seed: int | None = None,
        stop: str | None = None,
        weights: str | None = None,
        cache_size: int = 0,
        cache_theta: float | None = None,
        cache_lambda: float | None = None,
        logit_bias: dict[int, float] | None = None,
        regex: str | None = None,
        json_schema: dict | str | None = None,
    ) -> Iterator[str]:
        """The text ``generate`` would return (one sample), in pieces as it is written. The
        settings are checked now; the text is made as the iterator is read. Beam search knows its
        text only at the end: one piece."""
        settings = dict(locals())
        for name in ("self", "prime"):
            del settings[name]
        config = self._sample_config(prime, settings)
        if config.beam_width is not None:
            return iter(self._beam(config)[0])
        from charlstm.generation.sampling import generate

        generation = generate(self.module, self.tokenizer, config, self.device)
        return (pieces[0] for pieces in generation if pieces[0])

    def _sampled(self, config: SampleConfig):
        from charlstm.generation.sampling import generate

        generation = generate(self.module, self.tokenizer, config, self.device)
        texts = [[] for _ in range(config.num_samples)]
        for pieces in generation:
            for buffer, piece in zip(texts, pieces):
                buffer.append(piece)
        reasons = generation.finish_reasons
        return ["".join(t) for t in texts], generation.tokens, generation.mean_logprob, reasons

    def _beam(self, config: SampleConfig):
        """The most likely continuation of ``config.length`` tokens, cut at ``stop``."""
        from charlstm.generation.beam import beam_search
        from charlstm.generation.sampling import TextStream, encode_prime

        ids, logprob = beam_search(
            self.module, self.tokenizer, encode_prime(self.tokenizer, config.prime), config.length,
            config.beam_width, self.device, no_repeat_ngram=config.no_repeat_ngram,
        )
        table = self.tokenizer.token_bytes()
        stream = TextStream(length=4 * config.length + 64, stop=config.stop)  # length counts tokens here
        text = "".join(stream.feed(table[i]) for i in ids) + stream.finish()
        return [text], [len(ids)], [logprob / len(ids) if ids else math.nan], ["stop" if stream.stopped else "length"]

    def session(
        self,
        *,
        length: int = 200,
        temperature: float = 0.8,
        top_k: int | None = None,
        top_p: float | None = None,
        min_p: float | None = None,
        repetition_penalty: float = 1.0,
        repetition_window: int = 64,
        no_repeat_ngram: int | None = None,
        seed: int | None = None,
        weights: str | None = None,
        cache_size: int = 0,
        cache_theta: float | None = None,
        cache_lambda: float | None = None,
        chat_template: str | None = None,
    ) -> Session:
        """A text written turn by turn, as ``charlstm chat`` writes it: each ``reply`` reads its
        text after everything so far and continues it (the hidden state is kept, and with
        ``cache_size`` the neural cache of every turn's text). ``chat_template``: ``"plain"``,
        ``"chatml"`` or a Jinja chat template file; each ``reply`` is then the assistant's answer
        to a user's message, the conversation written out by the template (as ``charlstm serve``'s
        /v1/chat/completions writes it for the same messages and seed)."""
        settings = dict(locals())
        del settings["self"], settings["chat_template"]
        from charlstm.generation.chat import ChatSession
        from charlstm.generation.template import ChatTemplate

        template = None if chat_template is None else ChatTemplate.named(chat_template)
        settings["weights"] = self._weights(settings["weights"])
        config = SampleConfig(device=self._device_setting, **settings)
        return Session(ChatSession(self.module, self.tokenizer, config, self.device, template))


class Session:
    """A text written turn by turn with one model (``Model.session``): ``reply`` continues what
    it is given after everything so far; ``reset`` forgets it. One sample at a time."""

    def __init__(self, chat):
        self._chat = chat  # a charlstm.generation.chat.ChatSession

    def reply(self, text: str) -> str:
        """Read ``text`` after the text so far and return its continuation."""
        return "".join(self.stream(text))

    def stream(self, text: str) -> Iterator[str]:
        """``reply``, in pieces as they are written; the text is checked now. Stopping early keeps
        what was written up to there."""
        return iter(self._chat.reply(text))

    def reset(self) -> None:
        """Forget the text so far (and count the turns' seeds from the first again)."""
        self._chat.reset()

    def set(self, name: str, value: str) -> None:
        """Change one setting between turns, by its flag's name (``top-k``) and a text value
        (``off`` clears a filter), as ``/top-k 5`` in ``charlstm chat``."""
        self._chat.set(name, value)

    @property
    def settings(self) -> dict:
        """The settings by their flags' names (``top-k``), the seed included."""
        return self._chat.settings()

    def top_next(self, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` most likely next tokens after the text so far, with their probabilities."""
        return self._chat.top_next(k)
