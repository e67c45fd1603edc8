"""The web UI's tests: a real ``steptrace ui`` server and Chromium."""
