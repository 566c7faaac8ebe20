"""Ray Serve as a peer: the demo pipeline behind Ray Serve's gRPC proxy, in its own venv."""
