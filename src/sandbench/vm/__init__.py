"""Virtual-machine plumbing shared by the QEMU and Firecracker drivers: the guest kernel, the
initramfs with the guest agent, root and data disks, and the host side of the agent protocol."""
