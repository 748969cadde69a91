"""metaplat.inner"""
