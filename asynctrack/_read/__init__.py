"""Reading logged events and parameters back."""
