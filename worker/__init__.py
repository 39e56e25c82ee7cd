"""imagejobs worker daemon and the domain core shared with the API."""
