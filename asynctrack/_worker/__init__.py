"""The worker process itself: its boot script and the host of one engine per tracker."""
