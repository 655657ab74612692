"""Line-table oracle for tests/python_readers.rs (runs on CPython 3.6+).

For every code object compiled from the files given on the command line and from a generated
source (big line jumps, multi-line and very wide expressions), prints one line:
`FIRSTLINENO TABLE_HEX L0 L1 ...` where TABLE is co_lnotab (3.9 and older) or co_linetable and
Li is what the interpreter's own PyCode_Addr2Line answers for byte offset 2*i (-1: no line).
"""
import ctypes
import sys

addr2line = ctypes.pythonapi.PyCode_Addr2Line
addr2line.argtypes = [ctypes.py_object, ctypes.c_int]
addr2line.restype = ctypes.c_int

GENERATED = (
    "def far(a):\n"
    "    x = a\n" + "\n" * 300 +
    "    y = (x +\n"
    "         1)\n"
    "    for i in range(3):\n"
    "        x += i\n" + "\n" * 140 +
    "    z = (" + "x + " * 80 + "y)\n"
    "    return [i for i in range(x)\n"
    "            if i]\n"
    "\n"
    "class K:\n"
    "    def m(self):\n"
    "        try:\n"
    "            return 1 / 0\n"
    "        except ZeroDivisionError:\n"
    "            pass\n"
)


def walk(code):
    yield code
    for const in code.co_consts:
        if hasattr(const, "co_code"):
            yield from walk(const)


def dump(code):
    table = code.co_lnotab if sys.version_info < (3, 10) else code.co_linetable
    lines = [addr2line(code, off) for off in range(0, len(code.co_code), 2)]
    print(code.co_firstlineno, table.hex() or "-", " ".join(map(str, lines)))


sources = [("<generated>", GENERATED)]
for path in sys.argv[1:]:
    with open(path) as f:
        sources.append((path, f.read()))
for name, text in sources:
    for code in walk(compile(text, name, "exec")):
        dump(code)
