"""The OpenAPI document of the server (``GET /openapi.json``), built from its limits so that the
bounds it states are the bounds it enforces. Written out by hand: it is the API's reference, and
schemathesis checks the server against it."""

from __future__ import annotations

from charlstm.serving.requests import MAX_LOGPROBS, MAX_SEED, Limits


def _error() -> dict:
    return {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type", "param", "code"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": {"type": ["string", "null"]},
                    "code": {"type": ["string", "null"]},
                },
            }
        },
    }


def _responses(ok: dict, *statuses: int) -> dict:
    out = {"200": {"description": "OK", "content": {"application/json": {"schema": ok}}}}
    reasons = {
        400: "A field is malformed or over a limit (the error names it)",
        401: "The API key is missing or wrong",
        404: "No such model",
        413: "The body is over the limit",
        503: "The queue is full, the models are loading or the server is stopping (see Retry-After)",
    }
    for status in statuses:
        out[str(status)] = {
            "description": reasons[status],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    return out


def _nullable_number(low, high, **more) -> dict:
    return {"type": ["number", "null"], "minimum": low, "maximum": high, **more}


def _texts(limits: Limits) -> dict:
    text = {"type": "string", "maxLength": limits.max_prompt_chars}
    return {"oneOf": [text, {"type": "array", "items": text, "minItems": 1, "maxItems": limits.max_n}]}


def _prompt(limits: Limits) -> dict:
    """Text, texts, token ids, or lists of token ids (as OpenAI's completions prompt)."""
    ids = {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1, "maxItems": limits.max_prompt_chars}
    many_ids = {"type": "array", "items": ids, "minItems": 1, "maxItems": limits.max_n}
    return {"oneOf": [*_texts(limits)["oneOf"], ids, many_ids]}


def _completion_request(limits: Limits) -> dict:
    nullable_number = _nullable_number
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "model": {"type": "string", "description": "A model's id from /v1/models (optional when one is served)"},
            "prompt": _prompt(limits),
            "max_tokens": {"type": ["integer", "null"], "minimum": 0, "maximum": limits.max_tokens, "default": 16},
            "temperature": nullable_number(0, 100, default=1),
            "top_p": nullable_number(0, 1, exclusiveMinimum=True),
            "n": {"type": ["integer", "null"], "minimum": 1, "maximum": limits.max_n, "default": 1},
            "stop": {
                "oneOf": [
                    {"type": "null"},
                    {"type": "string", "minLength": 1, "maxLength": 1000},
                    {"type": "array", "maxItems": limits.max_stops, "items": {"type": "string", "minLength": 1, "maxLength": 1000}},
                ]
            },
            "seed": {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_SEED},
            "stream": {"type": ["boolean", "null"]},
            "stream_options": {
                "type": ["object", "null"],
                "additionalProperties": False,
                "properties": {"include_usage": {"type": "boolean"}},
            },
            "logprobs": {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_LOGPROBS},
            "echo": {"type": ["boolean", "null"]},
            "top_k": {"type": ["integer", "null"], "minimum": 1},
            "min_p": nullable_number(0, 1, exclusiveMinimum=True),
            "repetition_penalty": nullable_number(0, 100, exclusiveMinimum=True, default=1),
            "repetition_window": {"type": ["integer", "null"], "minimum": 1, "maximum": 4096, "default": 64},
            "no_repeat_ngram": {"type": ["integer", "null"], "minimum": 1, "maximum": 64},
            "logit_bias": {
                "type": ["object", "null"],
                "description": "Token id (as a string) -> bias added to its logit, -100 to 100",
                "additionalProperties": {"type": "number", "minimum": -100, "maximum": 100},
            },
            "regex": {"type": ["string", "null"], "minLength": 1, "maxLength": 10_000, "description": "Write only text matching this"},
            "response_format": {
                "type": ["object", "null"],
                "description": 'OpenAI\'s: {"type": "text" | "json_object"} or {"type": "json_schema", "json_schema": {"name", "schema"}}',
            },
            "activation": {
                "type": ["object", "null"],
                "description": "A cell to report the value of after each token (the playground colours by it)",
                "required": ["layer", "unit"],
                "additionalProperties": False,
                "properties": {"layer": {"type": "integer", "minimum": 0}, "unit": {"type": "integer", "minimum": 0}},
            },
            "user": {"type": ["string", "null"]},
        },
    }


_COMPLETION = {
    "type": "object",
    "required": ["id", "object", "created", "model", "choices", "seed"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "text_completion"},
        "created": {"type": "integer"},
        "model": {"type": "string"},
        "seed": {"type": "integer"},
        "choices": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["index", "text", "finish_reason"],
                "properties": {
                    "index": {"type": "integer"},
                    "text": {"type": "string"},
                    "finish_reason": {"enum": ["stop", "length", "time_limit", None]},
                    "logprobs": {"type": ["object", "null"]},
                },
            },
        },
        "usage": {"type": "object"},
    },
}


def _chat_request(limits: Limits) -> dict:
    """The chat request: messages, and the completions request's fields but its own."""
    fields = dict(_completion_request(limits)["properties"])
    for name in ("prompt", "echo", "suffix", "best_of", "activation", "logprobs"):
        fields.pop(name, None)
    message = {
        "type": "object",
        "required": ["role", "content"],
        "properties": {"role": {"enum": ["system", "developer", "user", "assistant"]}, "content": {"type": "string"}},
    }
    fields.update(
        messages={"type": "array", "items": message, "minItems": 1, "maxItems": 64},
        max_completion_tokens={"type": ["integer", "null"], "minimum": 0, "maximum": limits.max_tokens},
        logprobs={"type": ["boolean", "null"]},
        top_logprobs={"type": ["integer", "null"], "minimum": 0, "maximum": MAX_LOGPROBS},
    )
    return {"type": "object", "additionalProperties": False, "required": ["messages"], "properties": fields}


_CHAT = {
    "type": "object",
    "required": ["id", "object", "created", "model", "choices"],
    "properties": {
        "object": {"const": "chat.completion"},
        "choices": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["index", "message", "finish_reason"],
                "properties": {"message": {"type": "object", "required": ["role", "content"]}},
            },
        },
    },
}


def _tokenizer_paths(limits: Limits) -> dict:
    """vLLM's /tokenize, /detokenize and /tokenizer_info."""
    model = {"type": "string", "description": "A model's id (optional when one is served)"}
    tokenize = {
        "type": "object",
        "additionalProperties": False,
        "required": ["prompt"],
        "properties": {
            "model": model,
            "prompt": {"type": "string", "maxLength": limits.max_prompt_chars},
            "add_special_tokens": {"type": ["boolean", "null"], "default": True, "description": "Begin with the start token"},
            "return_token_strs": {"type": ["boolean", "null"]},
        },
    }
    tokens = {"type": "array", "items": {"type": "integer", "minimum": 0}}
    tokenized = {"type": "object", "required": ["tokens", "count", "max_model_len"],
                 "properties": {"tokens": tokens, "count": {"type": "integer"}, "max_model_len": {"type": "integer"}}}
    detokenize = {"type": "object", "additionalProperties": False, "required": ["tokens"],
                  "properties": {"model": model, "tokens": {**tokens, "maxItems": limits.max_prompt_chars}}}
    text = {"type": "object", "required": ["prompt"], "properties": {"prompt": {"type": "string"}}}
    info = {"type": "object", "required": ["tokenizer_class", "bos_token", "eos_token"]}
    return {
        "/tokenize": {
            "post": {
                "summary": "Token ids of a text (vLLM's shape)",
                "requestBody": {"required": True, "content": {"application/json": {"schema": tokenize}}},
                "responses": _responses(tokenized, 400, 401, 404, 413, 503),
            }
        },
        "/detokenize": {
            "post": {
                "summary": "The text of token ids (vLLM's shape)",
                "requestBody": {"required": True, "content": {"application/json": {"schema": detokenize}}},
                "responses": _responses(text, 400, 401, 404, 413, 503),
            }
        },
        "/tokenizer_info": {
            "get": {
                "summary": "The tokenizer: its class, start token (bos_token), chat template (vLLM's shape)",
                "parameters": [{"name": "model", "in": "query", "required": False, "schema": {"type": "string"}}],
                "responses": _responses(info, 400, 401, 404, 503),
            }
        },
    }


def openapi(limits: Limits) -> dict:
    """The API's OpenAPI 3.1 document, its bounds those of ``limits``."""
    texts = _texts(limits)
    completion_request, completion = _completion_request(limits), _COMPLETION
    score_request = {
        "type": "object",
        "additionalProperties": False,
        "required": ["input"],
        "properties": {"model": {"type": "string"}, "input": texts},
    }
    score = {
        "type": "object",
        "required": ["object", "model", "data"],
        "properties": {"object": {"const": "list"}, "model": {"type": "string"}, "data": {"type": "array"}},
    }
    models = {"type": "object", "required": ["object", "data"], "properties": {"data": {"type": "array"}}}
    plain = {"200": {"description": "OK"}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "charlstm serve", "version": "1", "description": "OpenAI-compatible completions from charlstm models"},
        "components": {
            "schemas": {"Error": _error()},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": {
            "/v1/completions": {
                "post": {
                    "summary": "Complete a prompt (stream: server-sent events ending with data: [DONE])",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": completion_request}}},
                    "responses": _responses(completion, 400, 401, 404, 413, 503),
                }
            },
            "/v1/chat/completions": {
                "post": {
                    "summary": "Reply to messages (written out by the chat template; stream: chat.completion.chunk events)",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _chat_request(limits)}}},
                    "responses": _responses(_CHAT, 400, 401, 404, 413, 503),
                }
            },
            **_tokenizer_paths(limits),
            "/v1/score": {
                "post": {
                    "summary": "Log-probability and bits per character of each line, as charlstm score",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": score_request}}},
                    "responses": _responses(score, 400, 401, 404, 413, 503),
                }
            },
            "/v1/models": {"get": {"summary": "The models served", "responses": _responses(models, 401, 503)}},
            "/health": {
                "get": {
                    "summary": "200 once the models are loaded, 503 before",
                    "responses": {"200": {"description": "Ready"}, "503": {"description": "Loading or stopping"}},
                }
            },
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {**plain, "401": {"description": "No key"}}}},
        },
    }
