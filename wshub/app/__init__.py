"""The FastAPI application: the app factory and its routes (/ws, /api, /admin, /metrics,
/asyncapi.json, the pages), a thin edge that translates HTTP and ASGI into hub calls."""
