"""Check fixture images with pefile, an independent PE reader.

Usage: pe_unwind_check.py <spec.json>

The spec lists mapped images (flat files: the image as loaded, RVA = file offset, pages the
fixture did not map are zeros) with what the ground truth expects of them:
  {"images": [{"name", "path", "exports": {name: rva}, "code_rvas": [rva],
               "machframe_rvas": [rva], "min_functions": n}]}

Each image is turned back into its file layout (headers, then each section's raw data at its
PointerToRawData), parsed by pefile, and checked: the exception directory parses into
RUNTIME_FUNCTIONs sorted by address, not overlapping, each pointing at a version 1
UNWIND_INFO inside the image whose codes pefile decodes; every code address of the truth's
frames lies in one function (a machine frame where a trap frame is crossed); every expected
export resolves to its name. Prints one summary line per image; exits 1 on the first failure.
"""

import json
import sys

import pefile

UWOP_PUSH_MACHFRAME = 10


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def file_layout(mapped):
    pe = pefile.PE(data=mapped, fast_load=True)
    size = pe.OPTIONAL_HEADER.SizeOfHeaders
    for s in pe.sections:
        size = max(size, s.PointerToRawData + s.SizeOfRawData)
    out = bytearray(size)
    out[: pe.OPTIONAL_HEADER.SizeOfHeaders] = mapped[: pe.OPTIONAL_HEADER.SizeOfHeaders]
    for s in pe.sections:
        raw = mapped[s.VirtualAddress : s.VirtualAddress + s.SizeOfRawData]
        out[s.PointerToRawData : s.PointerToRawData + len(raw)] = raw
    return bytes(out)


def check(image):
    name = image["name"]
    with open(image["path"], "rb") as f:
        mapped = f.read()
    pe = pefile.PE(data=file_layout(mapped), fast_load=True)
    pe.parse_data_directories(
        directories=[
            pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_EXPORT"],
            pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_EXCEPTION"],
        ]
    )
    warnings = [w for w in pe.get_warnings() if "UNWIND" in w.upper() or "exception" in w.lower()]
    if warnings:
        fail(f"{name}: pefile warnings: {warnings}")

    entries = getattr(pe, "DIRECTORY_ENTRY_EXCEPTION", None)
    if not entries:
        fail(f"{name}: no exception directory")
    d = pe.OPTIONAL_HEADER.DATA_DIRECTORY[pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_EXCEPTION"]]
    if len(entries) != d.Size // 12:
        fail(f"{name}: {len(entries)} RUNTIME_FUNCTIONs parsed, directory holds {d.Size // 12}")
    if len(entries) < image.get("min_functions", 1):
        fail(f"{name}: only {len(entries)} functions")
    previous_end = 0
    functions = []
    for e in entries:
        rf = e.struct
        if not previous_end <= rf.BeginAddress < rf.EndAddress:
            fail(f"{name}: RUNTIME_FUNCTION {rf.BeginAddress:#x}-{rf.EndAddress:#x} out of order or empty")
        previous_end = rf.EndAddress
        if pe.get_section_by_rva(rf.BeginAddress) is None:
            fail(f"{name}: function {rf.BeginAddress:#x} in no section")
        ui = e.unwindinfo
        if ui is None or pe.get_section_by_rva(rf.UnwindData) is None:
            fail(f"{name}: function {rf.BeginAddress:#x}: unwind info {rf.UnwindData:#x} not in the image")
        if ui.Version != 1 or ui.Flags != 0 or ui.CountOfCodes == 0:
            fail(f"{name}: function {rf.BeginAddress:#x}: unwind info v{ui.Version} flags {ui.Flags} codes {ui.CountOfCodes}")
        codes = ui.UnwindCodes
        slots = sum(c.length_in_code_structures(c.struct, ui) for c in codes)
        if slots != ui.CountOfCodes:
            fail(f"{name}: function {rf.BeginAddress:#x}: {slots} code slots decoded, {ui.CountOfCodes} declared")
        offsets = [c.struct.CodeOffset for c in codes]
        if offsets != sorted(offsets, reverse=True) or max(offsets) > ui.SizeOfProlog:
            fail(f"{name}: function {rf.BeginAddress:#x}: code offsets {offsets} vs prolog {ui.SizeOfProlog}")
        if (ui.FrameRegister != 0) != any(c.struct.UnwindOp == 3 for c in codes):
            fail(f"{name}: function {rf.BeginAddress:#x}: frame register without SET_FPREG")
        functions.append((rf.BeginAddress, rf.EndAddress, ui))

    def containing(rva):
        for b, e, ui in functions:
            if b <= rva < e:
                return b, ui
        return None

    for rva in image.get("code_rvas", []):
        found = containing(rva)
        if found is None:
            fail(f"{name}: frame at rva {rva:#x} lies in no RUNTIME_FUNCTION")
        begin, ui = found
        if rva - begin < ui.SizeOfProlog:
            fail(f"{name}: frame at rva {rva:#x} is inside its function's prologue")
    for rva in image.get("machframe_rvas", []):
        found = containing(rva)
        if found is None or not any(c.struct.UnwindOp == UWOP_PUSH_MACHFRAME for c in found[1].UnwindCodes):
            fail(f"{name}: the trap-frame function at rva {rva:#x} has no PUSH_MACHFRAME")

    expected = image.get("exports", {})
    exports = {}
    if expected:
        exp = getattr(pe, "DIRECTORY_ENTRY_EXPORT", None)
        if exp is None:
            fail(f"{name}: no export directory")
        names = [s.name.decode() for s in exp.symbols if s.name]
        if names != sorted(names):
            fail(f"{name}: export names are not sorted")
        exports = {s.name.decode(): s.address for s in exp.symbols if s.name}
        for n, rva in expected.items():
            if exports.get(n) != rva:
                fail(f"{name}: export {n} is {exports.get(n)}, expected {rva:#x}")
    print(
        f"{name}: {len(functions)} functions, {len(image.get('code_rvas', []))} frames, "
        f"{len(expected)}/{len(exports)} exports checked"
    )


def main():
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    for image in spec["images"]:
        check(image)
    print("pefile: all images check")


if __name__ == "__main__":
    main()
