"""Test infrastructure shared by tests/ and bench/, never installed: the image and the wheel
hold ``service`` only (docs/decisions.md, "Test infrastructure lives outside the package")."""
