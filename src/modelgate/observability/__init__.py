"""What modelgate shows of itself: metrics, traces, request logs and built-in alerts."""
