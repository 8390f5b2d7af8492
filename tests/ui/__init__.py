"""The training page: its API (tests/ui/test_api.py) and, in a real browser, the page (test_browser.py)."""
