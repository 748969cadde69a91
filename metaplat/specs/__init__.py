"""metaplat.specs"""
