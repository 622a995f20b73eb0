"""facecmp: pretrained vs fine-tuned MTCNN on a target domain, measured."""

__version__ = "0.1.0"
