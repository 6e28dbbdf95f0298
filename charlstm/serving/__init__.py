"""``charlstm serve``: models behind an OpenAI-compatible HTTP API, with a page to write with them.

Only this package knows the web stack (Starlette, uvicorn, prometheus_client), and it is imported
only by ``charlstm serve``, so the rest of charlstm works without the ``serve`` extra.

    errors     OpenAI's error shape (``{"error": {"message", "type", "param", "code"}}``)
    requests   the limits, and request bodies checked into typed records (400 naming the field)
    models     a served run: its module, tokenizer, one-token stepper and what /v1/models says
    batcher    the continuous batcher: one worker thread steps every running request together
    metrics    the Prometheus counters and histograms
    schema     the OpenAPI document (/openapi.json)
    app        the Starlette application: routes, auth, CORS, one log line per request
    page.html, page.js   the playground at ``/``
"""
