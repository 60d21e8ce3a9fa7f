"""The seed's three networks (the blog post the project began from, ../shared/seed), each kept as
close to its code as runs today; what had to change, and why, heads each module.

    slim_resnet_v2    seed/slim_resnet_v2_demo, seed/slim_resnet_v2_50   (TF-slim, graph mode)
    keras_resnet_v2   seed/keras_resnet_v2_50                             (Keras 3)
    torch_resnet_v2   seed/torch_resnet_v2                                (PyTorch)

The framework adapters build these for the seed's variants in the seed's own framework (the
native build), and their generic builders realise the same descriptions in the other two.
"""
