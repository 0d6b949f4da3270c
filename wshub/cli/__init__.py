"""The ``wshub`` command: ``serve`` (a node under uvicorn with its drain), ``config``,
``token``, ``listen``, ``publish`` and ``bench``; the settings table they share; log output."""
