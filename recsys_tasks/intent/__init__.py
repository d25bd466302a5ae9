"""Natural-language intent: a request's text as constraints on the catalogue (`parse`, `gate`)."""
