# What is copied of the agent, as gptagent -i copies it (agent/ship.cpp): its loadable image.
"""The bytes of an ELF executable that the kernel and the dynamic loader read: the ELF header, the
program headers and every segment's file contents, with the section header table and the sections
no segment holds (symbols, debug information) left out and the header's section fields zeroed.

The same bytes as agent/ship.cpp's read_loadable_image, so the same SHA-256 and the same cache name
(gptagent-<sha256>) on the host: a host served both by `gptagent apply -i` and by this collection
keeps one copy of each agent version.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import struct

# (struct format of the fields read, offsets) per ELF class: e_type, e_phoff, e_phentsize, e_phnum;
# then the section fields e_shoff, e_shnum, e_shstrndx; then a program header's p_type, p_offset, p_filesz.
_CLASSES = {
    2: dict(ehdr=64, phdr=56, word='Q', type_at=16, phoff_at=32, phentsize_at=54, phnum_at=56,
            shoff_at=40, shnum_at=60, shstrndx_at=62, p_type_at=0, p_offset_at=8, p_filesz_at=32),
    1: dict(ehdr=52, phdr=32, word='I', type_at=16, phoff_at=28, phentsize_at=42, phnum_at=44,
            shoff_at=32, shnum_at=48, shstrndx_at=50, p_type_at=0, p_offset_at=4, p_filesz_at=16),
}
_ET_EXEC, _ET_DYN, _PT_LOAD = 2, 3, 1


class NotAnAgent(Exception):
    pass


def _image_size(head, file_size):
    """How many bytes at the start of the file hold its header, program headers and segments."""
    if len(head) < 16 or head[:4] != b'\x7fELF':
        raise NotAnAgent('not an ELF file')
    layout = _CLASSES.get(head[4])
    if layout is None:
        raise NotAnAgent('an ELF file of an unknown class')
    order = {1: '<', 2: '>'}.get(head[5])
    if order is None:
        raise NotAnAgent('an ELF file of an unknown byte order')
    if len(head) < layout['ehdr']:
        raise NotAnAgent('an ELF file shorter than its header')

    def field(fmt, at, data=head):
        return struct.unpack_from(order + fmt, data, at)[0]

    word = layout['word']
    if field('H', layout['type_at']) not in (_ET_EXEC, _ET_DYN):
        raise NotAnAgent('not an ELF executable')
    phoff, phnum = field(word, layout['phoff_at']), field('H', layout['phnum_at'])
    if phnum == 0 or field('H', layout['phentsize_at']) != layout['phdr'] or phoff + phnum * layout['phdr'] > len(head):
        raise NotAnAgent('its program headers are not inside the file')
    end = max(layout['ehdr'], phoff + phnum * layout['phdr'])
    loads = False
    for i in range(phnum):
        at = phoff + i * layout['phdr']
        offset, filesz = field(word, at + layout['p_offset_at']), field(word, at + layout['p_filesz_at'])
        if filesz == 0:
            continue
        if offset + filesz > file_size:
            raise NotAnAgent('segment %d is not inside the file' % i)
        end = max(end, offset + filesz)
        loads = loads or field('I', at + layout['p_type_at']) == _PT_LOAD
    if not loads:
        raise NotAnAgent('no loadable segment')
    return end, layout, order


def read_loadable_image(path):
    """The loadable image of the executable at `path` (bytes); NotAnAgent when it is none."""
    with open(path, 'rb') as f:
        file_size = os.fstat(f.fileno()).st_size
        # The program headers follow the ELF header in every executable a linker makes.
        head = f.read(min(file_size, 64 * 1024))
        size, layout, order = _image_size(head, file_size)
        f.seek(0)
        image = bytearray(f.read(size))
    if len(image) != size:
        raise NotAnAgent('%s became shorter while it was read' % path)
    word = layout['word']
    struct.pack_into(order + word, image, layout['shoff_at'], 0)
    struct.pack_into(order + 'H', image, layout['shnum_at'], 0)
    struct.pack_into(order + 'H', image, layout['shstrndx_at'], 0)
    return bytes(image)
