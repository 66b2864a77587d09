import kdtf
def test_import():
    assert ".runfiles" in kdtf.__file__, kdtf.__file__
