"""Backbone names and one-line descriptions, importable without torch (``list backbones``, name checks).

The specs themselves live beside their networks (vit.py, resnet_fpn.py, ...); a test keeps this catalog
equal to the registry.
"""

BACKBONE_CATALOG = {
    "vit-s8": "DINO ViT-S/8 (timm vit_small_patch8_224); weights dino_deitsmall8_300ep_pretrain.pth",
    "vit-s16": "DINO ViT-S/16 (timm vit_small_patch16_224); weights dino_deitsmall16_pretrain.pth",
    "vit-b8": "DINO ViT-B/8 (timm vit_base_patch8_224); weights dino_vitbase8_pretrain.pth",
    "vit-b16": "DINO ViT-B/16 (timm vit_base_patch16_224); weights dino_vitbase16_pretrain.pth",
    "resnet18-fpn": "ResNet-18 + FPN (PiCIE); torchvision ImageNet weights resnet18-f37072fd.pth",
    "fcn-resnet50": "FCN ResNet-50, dilated, multi-grid (HSG); trained from scratch, no weights file",
    "fcn-resnet50-in1k": "FCN ResNet-50 (HSG variant); torchvision ImageNet weights resnet50-0676ba61.pth",
    "vgg-iic": "IIC's VGG-style SegmentationNet10a trunk; trained from scratch, no weights file",
    "san-vit": "SAN's 6-block ViT, patch 8 (timm VisionTransformer); trained from scratch, no weights file",
}
