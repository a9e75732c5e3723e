"""Building the guest's artifacts: kernel, initramfs and root image, in a content cache."""
