"""The model zoo sweep: torchvision, timm and Hugging Face models through the whole job."""
