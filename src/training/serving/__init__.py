"""What the prediction service (src/service.py) needs at run time, packaged into the bento.

Nothing here may import the run store, SQLAlchemy or the training pipeline: a built bento
serves without them.
"""
