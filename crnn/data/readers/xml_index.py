"""The XML indexes of SVT (``test.xml``, word boxes on scene images) and IC03 (``word.xml``), small and listed
whole, parsed by defusedxml: an index that declares entities is refused before any is expanded
(``XmlEntitiesRefused``), so no external file is read and no entity bomb grows, and one that is not
well-formed (invalid UTF-8 included) is an error naming the file.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from defusedxml import EntitiesForbidden

from crnn.data.readers.core import Entry, skip, under_root


class XmlEntitiesRefused(EntitiesForbidden):
    """An XML index that declares entities: refused before any is expanded, so no external file (XXE) is read
    and no entity bomb grows. Still a defusedxml ``EntitiesForbidden`` (and a ``ValueError``), naming the file."""

    def __init__(self, xml_file: Path, err: EntitiesForbidden) -> None:
        super().__init__(err.name, err.value, err.base, err.sysid, err.pubid, err.notation_name)
        self.file = xml_file

    def __str__(self) -> str:
        where = f" (SYSTEM {self.sysid!r})" if self.sysid else ""
        return f"{self.file}: refused: it declares the XML entity {self.name!r}{where}; entities are never expanded"


def _xml_root(xml_file: Path):
    """The root element of an XML index, parsed by defusedxml: entity declarations refused, external
    references never fetched; a file that is not well-formed XML is an error naming it."""
    from defusedxml import DefusedXmlException, ElementTree

    try:
        return ElementTree.parse(xml_file).getroot()
    except EntitiesForbidden as err:
        raise XmlEntitiesRefused(Path(xml_file), err) from None
    except (DefusedXmlException, ElementTree.ParseError) as err:
        raise ValueError(f"{xml_file}: not a usable XML index: {err}") from None


def list_svt(xml_file: Path, skipped: Counter) -> list[Entry]:
    """``test.xml``: word boxes on scene images. Each box is cropped when loaded, clamped to the image, and
    skipped when less than 2 x 2 pixels of it are inside (``box_outside_image``); a box whose numbers are not
    integers, or whose width or height is not positive, is ``malformed_box``."""
    entries = []
    for image_node in _xml_root(xml_file).iter("image"):
        name = (image_node.findtext("imageName") or "").strip()
        rects = list(image_node.iter("taggedRectangle"))
        if not under_root(name, Counter(), xml_file):
            skipped["path_outside_root"] += len(rects)
            continue
        for index, rect in enumerate(rects):
            try:
                box = tuple(int(rect.get(k)) for k in ("x", "y", "width", "height"))
            except (TypeError, ValueError):
                skip(skipped, "malformed_box", f"{xml_file} {name}#{index}", "x, y, width, height not integers")
                continue
            if box[2] <= 0 or box[3] <= 0:
                skip(skipped, "malformed_box", f"{xml_file} {name}#{index}", f"width x height {box[2]} x {box[3]}")
                continue
            entries.append(Entry(name, (rect.findtext("tag") or "").strip(), f"{name}#{index}", box))
    return entries


def list_ic03(xml_file: Path, skipped: Counter) -> list[Entry]:
    """ICDAR 2003 ``word.xml``: ``<image file="word/1/1.jpg" tag="311" />``."""
    entries = []
    for index, node in enumerate(_xml_root(xml_file).iter("image")):
        name, label = node.get("file"), node.get("tag")
        if not name or label is None:
            skip(skipped, "malformed_entry", f"{xml_file} image {index}", "no file= or tag=")
            continue
        if under_root(name, skipped, xml_file):
            entries.append(Entry(name, label, name))
    return entries
