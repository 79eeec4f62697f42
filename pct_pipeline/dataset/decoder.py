"""The loader's FFCV decoder of §Views: each image is decoded, cropped to the box of
`boxes.params` (or `boxes.eval_params`), resized and flipped inside ffcv's compiled stage."""
import ctypes

import numpy as np

from ffcv.fields.rgb_image import IMAGE_MODES, ResizedCropRGBImageDecoder
from ffcv.libffcv import imdecode, lib, resize_crop
from ffcv.pipeline.compiler import Compiler

from ..boxes import eval_params, params

_copy_bytes = lib.my_memcpy
_copy_bytes.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint64]


class ViewDecoder(ResizedCropRGBImageDecoder):
    """FFCV decoder: JPEG decode, crop box of the current view, resize, flip.

    The view index lives in a one-element array read at run time through its address, so
    ``set_view`` changes the view between epochs without recompiling the pipeline. An image
    whose bytes do not decode writes its sample index into `failed` (the same way), which the
    loader checks after every batch.
    """

    def __init__(self, spec):
        super().__init__((spec.resolution, spec.resolution))
        self.spec = spec  # views.ViewSpec
        self.view_cell = np.zeros(1, np.int64)
        self.failed = np.full(1, -1, np.int64)

    def set_view(self, view):
        self.view_cell[0] = int(view)

    def get_crop_generator(self):  # the box comes from params(); ffcv's hook is unused
        return None

    def generate_code(self):
        jpg = IMAGE_MODES['jpg']
        mem_read = self.memory_read
        my_range = Compiler.get_iterator()
        imdecode_c = Compiler.compile(imdecode)
        resize_crop_c = Compiler.compile(resize_crop)
        copy_bytes = _copy_bytes
        view_addr, failed_addr = self.view_cell.ctypes.data, self.failed.ctypes.data
        spec = self.spec
        view_seed, eval_view, crop_ratio = np.uint64(spec.view_seed), spec.eval_view, spec.crop_ratio
        s_lo, s_hi = spec.scale
        r_lo, r_hi = spec.ratio
        flip_p = spec.flip
        box_of, eval_box_of = params, eval_params

        def decode(batch_indices, my_storage, metadata, storage_state):
            destination, temp_storage = my_storage
            view_now = np.zeros(1, np.int64)
            copy_bytes(view_addr, view_now.ctypes.data, 8)
            view = view_now[0]
            for dst_ix in my_range(len(batch_indices)):
                source_ix = batch_indices[dst_ix]
                field = metadata[source_ix]
                image_data = mem_read(field['data_ptr'], storage_state)
                height = np.uint32(field['height'])
                width = np.uint32(field['width'])
                if field['mode'] == jpg:
                    temp_buffer = temp_storage[dst_ix]
                    status = imdecode_c(image_data, temp_buffer, height, width, height, width,
                                        0, 0, 1, 1, False, False)
                    if status != 0:
                        bad = np.full(1, source_ix, np.int64)
                        copy_bytes(bad.ctypes.data, failed_addr, 8)  # (source, target)
                    temp_buffer = temp_buffer.reshape(-1)[:3 * height * width]
                    temp_buffer = temp_buffer.reshape(height, width, 3)
                else:
                    temp_buffer = image_data.reshape(height, width, 3)
                if eval_view:
                    top, left, h, w, flip = eval_box_of(np.int64(height), np.int64(width), crop_ratio)
                else:
                    top, left, h, w, flip = box_of(view_seed, view, np.int64(source_ix),
                                                   np.int64(height), np.int64(width),
                                                   s_lo, s_hi, r_lo, r_hi, flip_p)
                out = destination[dst_ix]
                resize_crop_c(temp_buffer, top, top + h, left, left + w, out)
                if flip:
                    out_w = out.shape[1]
                    for col in range(out_w // 2):
                        for row in range(out.shape[0]):
                            for ch in range(3):
                                a = out[row, col, ch]
                                out[row, col, ch] = out[row, out_w - 1 - col, ch]
                                out[row, out_w - 1 - col, ch] = a
            return destination[:len(batch_indices)]

        decode.is_parallel = True
        return decode
