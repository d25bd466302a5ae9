"""Items added to the source between retrains: found, embedded and recorded on the champion's version
(`new_items`), and applied wherever that version is loaded (`added`)."""
