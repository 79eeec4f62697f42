"""`pct models`'s rows for this package's own architecture names (torchvision's, the ResNet
variants, the small CNNs), so that the command answers without importing torch: computed by
models.command.describe (each model built with its parameters on the meta device) under the
torchvision named below. Under another torchvision `pct models` computes them itself;
tests/test_models.py checks every row against describe(). Regenerate with
`python -m pct_pipeline.models.table`.
"""
TORCHVISION = "0.29.1"
FIELDS = ("name", "params", "feature_dim", "min_input", "min_train_input", "exact_input",
          "pretrained")
ROWS = (
    ("cnn_small", 39088, 32, 4, 4, False, False),
    ("cnn_wide", 222472, 128, 4, 4, False, False),
    ("alexnet", 61100840, 4096, 63, 63, False, True),
    ("aux_resnet101", 50992632, 2048, 1, 1, False, True),
    ("aux_resnet152", 66636280, 2048, 1, 1, False, True),
    ("aux_resnet18", 17985528, 512, 1, 1, False, True),
    ("aux_resnet34", 28093688, 512, 1, 1, False, True),
    ("aux_resnet50", 32000504, 2048, 1, 1, False, True),
    ("convnext_base", 88591464, 1024, 32, 32, False, True),
    ("convnext_large", 197767336, 1536, 32, 32, False, True),
    ("convnext_small", 50223688, 768, 32, 32, False, True),
    ("convnext_tiny", 28589128, 768, 32, 32, False, True),
    ("densenet121", 7978856, 1024, 29, 29, False, True),
    ("densenet161", 28681000, 2208, 29, 29, False, True),
    ("densenet169", 14149480, 1664, 29, 29, False, True),
    ("densenet201", 20013928, 1920, 29, 29, False, True),
    ("efficientnet_b0", 5288548, 1280, 1, 1, False, True),
    ("efficientnet_b1", 7794184, 1280, 1, 1, False, True),
    ("efficientnet_b2", 9109994, 1408, 1, 1, False, True),
    ("efficientnet_b3", 12233232, 1536, 1, 1, False, True),
    ("efficientnet_b4", 19341616, 1792, 1, 1, False, True),
    ("efficientnet_b5", 30389784, 2048, 1, 1, False, True),
    ("efficientnet_b6", 43040704, 2304, 1, 1, False, True),
    ("efficientnet_b7", 66347960, 2560, 1, 1, False, True),
    ("efficientnet_v2_l", 118515272, 1280, 1, 1, False, True),
    ("efficientnet_v2_m", 54139356, 1280, 1, 1, False, True),
    ("efficientnet_v2_s", 21458488, 1280, 1, 1, False, True),
    ("googlenet", 13004888, 1024, 15, 15, False, True),
    ("inception_v3", 27161264, 2048, 75, 299, False, True),
    ("maxvit_t", 30919624, 512, 224, 224, True, True),
    ("mb_resnet101", 48647160, 2048, 1, 1, False, True),
    ("mb_resnet152", 64290808, 2048, 1, 1, False, True),
    ("mb_resnet18", 12715512, 512, 1, 1, False, True),
    ("mb_resnet34", 22823672, 512, 1, 1, False, True),
    ("mb_resnet50", 29655032, 2048, 1, 1, False, True),
    ("mnasnet0_5", 2218512, 1280, 1, 1, False, True),
    ("mnasnet0_75", 3170208, 1280, 1, 1, False, True),
    ("mnasnet1_0", 4383312, 1280, 1, 1, False, True),
    ("mnasnet1_3", 6282256, 1280, 1, 1, False, True),
    ("mobilenet_v2", 3504872, 1280, 1, 1, False, True),
    ("mobilenet_v3_large", 5483032, 1280, 1, 1, False, True),
    ("mobilenet_v3_small", 2542856, 1024, 1, 1, False, True),
    ("regnet_x_16gf", 54278536, 2048, 1, 1, False, True),
    ("regnet_x_1_6gf", 9190136, 912, 1, 1, False, True),
    ("regnet_x_32gf", 107811560, 2520, 1, 1, False, True),
    ("regnet_x_3_2gf", 15296552, 1008, 1, 1, False, True),
    ("regnet_x_400mf", 5495976, 400, 1, 1, False, True),
    ("regnet_x_800mf", 7259656, 672, 1, 1, False, True),
    ("regnet_x_8gf", 39572648, 1920, 1, 1, False, True),
    ("regnet_y_128gf", 644812894, 7392, 1, 1, False, True),
    ("regnet_y_16gf", 83590140, 3024, 1, 1, False, True),
    ("regnet_y_1_6gf", 11202430, 888, 1, 1, False, True),
    ("regnet_y_32gf", 145046770, 3712, 1, 1, False, True),
    ("regnet_y_3_2gf", 19436338, 1512, 1, 1, False, True),
    ("regnet_y_400mf", 4344144, 440, 1, 1, False, True),
    ("regnet_y_800mf", 6432512, 784, 1, 1, False, True),
    ("regnet_y_8gf", 39381472, 2016, 1, 1, False, True),
    ("resnet101", 44549160, 2048, 1, 1, False, True),
    ("resnet101_StoDepth_lineardecay", 44549160, 2048, 1, 1, False, True),
    ("resnet152", 60192808, 2048, 1, 1, False, True),
    ("resnet152_StoDepth_lineardecay", 60192808, 2048, 1, 1, False, True),
    ("resnet18", 11689512, 512, 1, 1, False, True),
    ("resnet18_StoDepth_lineardecay", 11689512, 512, 1, 1, False, True),
    ("resnet34", 21797672, 512, 1, 1, False, True),
    ("resnet34_StoDepth_lineardecay", 21797672, 512, 1, 1, False, True),
    ("resnet50", 25557032, 2048, 1, 1, False, True),
    ("resnet50_StoDepth_lineardecay", 25557032, 2048, 1, 1, False, True),
    ("resnext101_32x8d", 88791336, 2048, 1, 1, False, True),
    ("resnext101_64x4d", 83455272, 2048, 1, 1, False, True),
    ("resnext50_32x4d", 25028904, 2048, 1, 1, False, True),
    ("shufflenet_v2_x0_5", 1366792, 1024, 1, 1, False, True),
    ("shufflenet_v2_x1_0", 2278604, 1024, 1, 1, False, True),
    ("shufflenet_v2_x1_5", 3503624, 1024, 1, 1, False, True),
    ("shufflenet_v2_x2_0", 7393996, 2048, 1, 1, False, True),
    ("squeezenet1_0", 1248424, 512, 21, 21, False, True),
    ("squeezenet1_1", 1235496, 512, 17, 17, False, True),
    ("swin_b", 87768224, 1024, 4, 4, False, True),
    ("swin_s", 49606258, 768, 4, 4, False, True),
    ("swin_t", 28288354, 768, 4, 4, False, True),
    ("swin_v2_b", 87930848, 1024, 4, 4, False, True),
    ("swin_v2_s", 49737442, 768, 4, 4, False, True),
    ("swin_v2_t", 28351570, 768, 4, 4, False, True),
    ("vgg11", 132863336, 4096, 32, 32, False, True),
    ("vgg11_bn", 132868840, 4096, 32, 32, False, True),
    ("vgg13", 133047848, 4096, 32, 32, False, True),
    ("vgg13_bn", 133053736, 4096, 32, 32, False, True),
    ("vgg16", 138357544, 4096, 32, 32, False, True),
    ("vgg16_bn", 138365992, 4096, 32, 32, False, True),
    ("vgg19", 143667240, 4096, 32, 32, False, True),
    ("vgg19_bn", 143678248, 4096, 32, 32, False, True),
    ("vit_b_16", 86567656, 768, 224, 224, True, True),
    ("vit_b_32", 88224232, 768, 224, 224, True, True),
    ("vit_h_14", 632045800, 1280, 224, 224, True, True),
    ("vit_l_16", 304326632, 1024, 224, 224, True, True),
    ("vit_l_32", 306535400, 1024, 224, 224, True, True),
    ("wide_resnet101_2", 126886696, 2048, 1, 1, False, True),
    ("wide_resnet50_2", 68883240, 2048, 1, 1, False, True),
)


def write():
    """Recompute ROWS and TORCHVISION with describe() and rewrite this file."""
    import importlib.metadata
    from pathlib import Path

    from . import available_models
    from .command import describe

    path = Path(__file__)
    text = path.read_text()
    head, tail = text[:text.index("TORCHVISION = ")], text[text.index("\n\ndef write():"):]
    fields = text[text.index("FIELDS = "):text.index("ROWS = ")]
    quoted = lambda value: f'"{value}"' if isinstance(value, str) else repr(value)  # noqa: E731
    rows = "".join(f"    ({', '.join(map(quoted, describe(arch).values()))}),\n"
                   for arch in available_models())
    version = quoted(importlib.metadata.version("torchvision"))
    path.write_text(f"{head}TORCHVISION = {version}\n{fields}ROWS = (\n{rows})\n{tail}")


if __name__ == "__main__":
    write()
