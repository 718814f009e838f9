class Base:
    def steps(self):
        yield 1


class Child(Base):
    def steps(self, extra=2):
        yield from super().steps()
        yield self.__secret + extra
