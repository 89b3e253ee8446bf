"""tbkit inside other tools: the Keras callback, the Python ``logging`` bridge and the rotating
JSON Lines handler."""
