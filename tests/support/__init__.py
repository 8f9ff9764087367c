"""What the tests (and `bench/`) share: real servers in their own processes (`processes`, the
fake router in `fake_router`, a proxy in front of it in `harness`, the browser's in `browser`),
ways to call the application in-process (`clients`, `asgi`), the router's answers (`answers`),
rows and values to start from (`factories`) and the fault suite's scenarios (`faults`).
Fixtures stay in the conftest.py files; these are plain modules."""
