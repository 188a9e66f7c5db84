"""Image-size limits shared by every reader and writer of training images (no heavy imports, so that
conversion worker processes can use them cheaply)."""

#: The smallest training resolution (StyleGAN2's 4x4 base block).
MIN_RESOLUTION = 4
#: The largest output side accepted anywhere: far above any training resolution (StyleGAN2 goes to 1024),
#: and an [R, R] float32 image of this side already takes 256 MiB (768 MiB for RGB).
MAX_RESOLUTION = 8192
