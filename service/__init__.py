"""The code service: an ASGI application (FastAPI on uvicorn) with one router per party."""
