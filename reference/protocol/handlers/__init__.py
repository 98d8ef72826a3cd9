"""One module per Kafka API. Each exposes `API_KEY` and
`async def handle(request, ctx) -> response | None` (None: send nothing)."""
