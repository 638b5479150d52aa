"""Find, start, supervise and stop a real `tritonserver`."""
