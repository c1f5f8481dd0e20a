"""The console: an activity store cached from the topics (``store.py``, ``feed.py``) and the pages over it."""
