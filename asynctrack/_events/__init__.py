"""What records mean, worker side: event kinds, translation to JSON lines, run parameters, streams."""
